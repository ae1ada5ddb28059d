/*
** lreadline.c - line editing and history for the interactive prompt, with
** GNU readline's alternate (callback) interface: the prompt's coroutine
** watches stdin on the loop and feeds readline one byte at a time, so the
** loop keeps serving (timers fire) while the user types.
**
** One line at a time: core.readline_start(prompt) shows the prompt and
** takes over the terminal; core.readline_feed() reads what is there and
** returns the line once Enter is pressed. The handler is removed as soon
** as a line is complete, which gives the terminal back (cooked mode, so
** Ctrl-C raises SIGINT and output looks normal) while the typed code runs.
** readline catches no signals here: SIGINT belongs to src/lua/linterrupt.c.
*/
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "lreadline.h"
#include "runtime.h"

enum { NOTHING, GOT_LINE, GOT_EOF };

static int installed;        /* a handler is installed (terminal is ours) */
static int state = NOTHING;  /* what the last feed completed */
static char *line;           /* GOT_LINE: malloc'ed by readline, ours */

/* readline's line handler: keep the line, give the terminal back. */
static void on_line(char *text) {
  free(line);
  line = text;
  state = text != NULL ? GOT_LINE : GOT_EOF;
  rl_callback_handler_remove();
  installed = 0;
}

/* At exit (os.exit from a timer while the prompt waits) the terminal must
** not stay in readline's mode. */
static void restore_terminal(void) {
  if (installed) {
    rl_callback_handler_remove();
    installed = 0;
  }
}

static void setup_once(void) {
  static int done;
  if (done) return;
  done = 1;
  rl_readline_name = "evlua";   /* for $if evlua in ~/.inputrc */
  rl_catch_signals = 0;         /* SIGINT is linterrupt.c's */
  atexit(restore_terminal);
}

/* core.readline_start(prompt): show the prompt, start editing a line */
static int l_readline_start(lua_State *L) {
  const char *prompt = luaL_checkstring(L, 1);
  setup_once();
  if (installed) rl_callback_handler_remove();
  free(line);
  line = NULL;
  state = NOTHING;
  rl_callback_handler_install(prompt, on_line);
  installed = 1;
  return 0;
}

/* core.readline_feed() -> line | nil, "eof" | false (not done yet). Call
** when stdin is readable: readline reads one byte (a level-triggered
** watcher brings the rest). */
static int l_readline_feed(lua_State *L) {
  if (!installed) return luaL_error(L, "readline_feed without readline_start");
  rl_callback_read_char();
  switch (state) {
  case GOT_LINE:
    lua_pushstring(L, line);
    free(line);
    line = NULL;
    state = NOTHING;
    return 1;
  case GOT_EOF:
    state = NOTHING;
    return evlua_fail(L, "eof", "eof");
  default:
    lua_pushboolean(L, 0);
    return 1;
  }
}

/* core.readline_cancel(): drop the line being edited (Ctrl-C at the
** prompt), move to a new line and give the terminal back. */
static int l_readline_cancel(lua_State *L) {
  (void)L;
  if (!installed) return 0;
  rl_replace_line("", 0);
  rl_callback_sigcleanup();   /* an incomplete key sequence, a search */
  rl_callback_handler_remove();
  installed = 0;
  fputs("\n", rl_outstream ? rl_outstream : stdout);
  fflush(rl_outstream ? rl_outstream : stdout);
  return 0;
}

/* core.readline_add_history(line): Up-arrow recalls it */
static int l_readline_add_history(lua_State *L) {
  add_history(luaL_checkstring(L, 1));
  return 0;
}

void evlua_open_readline(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "readline_start", l_readline_start },
    { "readline_feed", l_readline_feed },
    { "readline_cancel", l_readline_cancel },
    { "readline_add_history", l_readline_add_history },
    { NULL, NULL }
  };
  luaL_setfuncs(L, funcs, 0);   /* into the core table below */
}
