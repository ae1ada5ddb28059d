/*
** log.h - timestamped log lines (pure C, no Lua).
** A line is "YYYY-MM-DD HH:MM:SS.mmm LEVEL message\n", written with one
** write(2) so lines from several processes sharing a file do not interleave.
*/
#ifndef EVLUA_LOG_H
#define EVLUA_LOG_H

#include <stddef.h>

enum evlua_log_level {
  EVLUA_LOG_ERROR = 0,
  EVLUA_LOG_WARN,
  EVLUA_LOG_INFO,
  EVLUA_LOG_DEBUG
};

/* Level for a name ("error", "warn", "info", "debug"), or -1 if unknown. */
int evlua_log_level_parse(const char *name);

/* Upper-case name of a level ("ERROR"...), "?" if out of range. */
const char *evlua_log_level_name(int level);

/* Format the line prefix for wall-clock time `now` (seconds since the epoch)
** into buf: "YYYY-MM-DD HH:MM:SS.mmm LEVEL ". Returns the length written
** (excluding the NUL), or 0 if size is too small. */
size_t evlua_log_prefix(char *buf, size_t size, double now, int level);

/* Send lines to the file at `path` (appending), or back to stderr when path
** is NULL. Returns 0, or -1 with a message in err. */
int evlua_log_open(const char *path, char *err, size_t errlen);

/* Lines above this level are dropped; returns the previous threshold. */
int evlua_log_set_level(int level);
int evlua_log_get_level(void);

/* Write one line (message of len bytes) if level passes the threshold. */
void evlua_log_write(int level, double now, const char *msg, size_t len);

/* printf-style convenience for C callers; uses the current wall clock. */
void evlua_log(int level, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

#endif
