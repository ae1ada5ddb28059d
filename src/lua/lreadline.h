/*
** lreadline.h - the interactive prompt's line editor (GNU readline's
** callback interface), added to the evlua.core table.
*/
#ifndef EVLUA_LREADLINE_H
#define EVLUA_LREADLINE_H

#include <lua.h>

/* Add core.readline_start/feed/cancel/add_history to the table on top. */
void evlua_open_readline(lua_State *L);

#endif
