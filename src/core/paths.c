/*
** paths.c - where evlua finds its Lua library and scripts (pure C, no Lua).
*/
#include "paths.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int evlua_paths_exe_dir(char *out, size_t size) {
  ssize_t n = readlink("/proc/self/exe", out, size - 1);
  if (n <= 0 || (size_t)n >= size - 1) return -1;
  out[n] = '\0';
  char *slash = strrchr(out, '/');
  if (slash == NULL) return -1;
  if (slash == out) slash[1] = '\0';  /* executable in "/" */
  else *slash = '\0';
  return 0;
}

static int has_event_lua(const char *dir) {
  char file[4096];
  struct stat st;
  if (snprintf(file, sizeof file, "%s/event.lua", dir) >= (int)sizeof file)
    return 0;
  return stat(file, &st) == 0 && S_ISREG(st.st_mode);
}

int evlua_paths_lib_dir(const char *exe_dir, const char *share_dir,
                        char *out, size_t size) {
  /* base, suffix: the candidates in order */
  const char *candidates[][2] = {
    { exe_dir, "/lua" },
    { exe_dir, "/../share/evlua/lua" },
    { share_dir, "/lua" },
  };
  for (int i = 0; i < 3; i++) {
    if (candidates[i][0] == NULL) continue;
    int n = snprintf(out, size, "%s%s", candidates[i][0], candidates[i][1]);
    if (n > 0 && (size_t)n < size && has_event_lua(out)) return 0;
  }
  return -1;
}

int evlua_paths_search(const char *override, const char *lib_dir,
                       const char *stock, char *out, size_t size) {
  char def[8192];
  int n = snprintf(def, sizeof def, "%s/?.lua;%s/?/init.lua;%s",
                   lib_dir, lib_dir, stock);
  if (n < 0 || (size_t)n >= sizeof def) return -1;
  if (override == NULL) {
    if ((size_t)n >= size) return -1;
    memcpy(out, def, (size_t)n + 1);
    return 0;
  }
  /* Copy the override, expanding each ";;" into ";<default>;". */
  size_t len = 0;
  for (const char *p = override; *p; p++) {
    const char *piece = p;
    size_t plen = 1;
    if (p[0] == ';' && p[1] == ';') {
      piece = NULL;
      p++;
    }
    if (piece == NULL) {
      int m = snprintf(out + len, size - len, ";%s;", def);
      if (m < 0 || (size_t)m >= size - len) return -1;
      len += (size_t)m;
    } else {
      if (len + plen >= size) return -1;
      out[len++] = *piece;
    }
  }
  out[len] = '\0';
  return 0;
}
