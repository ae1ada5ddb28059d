/*
** log.c - timestamped log lines (pure C, no Lua).
*/
#include "log.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;            /* stderr until a file is opened */
static int log_level = EVLUA_LOG_INFO;

static const char *const level_names[] = { "ERROR", "WARN", "INFO", "DEBUG" };
static const char *const level_keys[] = { "error", "warn", "info", "debug" };

int evlua_log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_keys[i]) == 0) return i;
  return -1;
}

const char *evlua_log_level_name(int level) {
  return (level >= 0 && level < 4) ? level_names[level] : "?";
}

size_t evlua_log_prefix(char *buf, size_t size, double now, int level) {
  time_t secs = (time_t)now;
  int millis = (int)((now - (double)secs) * 1000.0);
  struct tm tm;
  if (millis < 0) millis = 0;
  if (millis > 999) millis = 999;
  localtime_r(&secs, &tm);
  int n = snprintf(buf, size, "%04d-%02d-%02d %02d:%02d:%02d.%03d %s ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, millis,
                   evlua_log_level_name(level));
  if (n < 0 || (size_t)n >= size) return 0;
  return (size_t)n;
}

int evlua_log_open(const char *path, char *err, size_t errlen) {
  if (path == NULL) {
    if (log_fd != 2) close(log_fd);
    log_fd = 2;
    return 0;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    return -1;
  }
  if (log_fd != 2) close(log_fd);
  log_fd = fd;
  return 0;
}

int evlua_log_set_level(int level) {
  int old = log_level;
  log_level = level;
  return old;
}

int evlua_log_get_level(void) {
  return log_level;
}

void evlua_log_write(int level, double now, const char *msg, size_t len) {
  if (level > log_level) return;
  static char newline[] = "\n";
  char prefix[64];
  struct iovec iov[3];
  iov[0].iov_base = prefix;
  iov[0].iov_len = evlua_log_prefix(prefix, sizeof prefix, now, level);
  iov[1].iov_base = (void *)(uintptr_t)msg;   /* writev does not write it */
  iov[1].iov_len = len;
  iov[2].iov_base = newline;
  iov[2].iov_len = 1;
  /* A short or failed write of a log line has nowhere better to go. */
  ssize_t r;
  do r = writev(log_fd, iov, 3); while (r < 0 && errno == EINTR);
}

void evlua_log(int level, const char *fmt, ...) {
  char msg[1024];
  struct timeval tv;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  gettimeofday(&tv, NULL);
  evlua_log_write(level, (double)tv.tv_sec + tv.tv_usec / 1e6, msg, (size_t)n);
}
