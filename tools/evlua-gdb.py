# tools/evlua-gdb.py - Lua stacks of an evlua process from gdb, live or
# from a core file:
#
#   gdb -p PID -batch -x tools/evlua-gdb.py -ex "lua bt"
#   gdb ./evlua core.1234 -batch -x tools/evlua-gdb.py -ex "lua coroutines"
#
# Commands: "lua bt" (the running coroutine, or the main thread when the
# loop is idle), "lua coroutines" (every coroutine, its status and stack),
# "lua locals [N]" (the locals of Lua frame N of "lua bt", default 0).
#
# liblua5.4 comes without debug symbols, so the script carries the layouts
# of Lua's internal structs (lua_State, CallInfo, Proto, TString...) for
# the releases Debian ships, and checks the library's version (lua_ident)
# before reading anything. evlua itself is built with -g: the running
# thread (linterrupt.c's running_thread) and the runtime (its main
# thread) come through evlua's own debug info. Every pointer followed is
# checked against the type tag it must carry, so a layout that does not
# fit gives an error, not a made-up stack. See docs/gdb.md.

import re
import struct

import gdb

# Layouts ==================================================================

# Byte offsets on 64-bit Linux. 5.4.4 (Debian 12) is the one tested; 5.4.6
# and 5.4.7 (Debian 13) keep these fields where 5.4.4 has them (5.4.6
# turned the stack pointers into StkIdRel, a union of the same size).
LAYOUT_54 = {
    # lua_State
    "L.status": 10, "L.top": 16, "L.l_G": 24, "L.ci": 32, "L.stack": 48,
    "L.base_ci": 96,
    # CallInfo
    "ci.func": 0, "ci.previous": 16, "ci.savedpc": 32, "ci.callstatus": 62,
    # closures: LClosure.p, CClosure.f
    "cl.p": 24, "cl.f": 24,
    # Proto
    "p.sizecode": 24, "p.sizelocvars": 36, "p.sizeabslineinfo": 40,
    "p.linedefined": 44, "p.code": 64, "p.lineinfo": 88,
    "p.abslineinfo": 96, "p.locvars": 104, "p.source": 112,
    # TString
    "ts.shrlen": 11, "ts.lnglen": 16, "ts.contents": 24,
    # Table
    "t.lsizenode": 11, "t.alimit": 12, "t.array": 16, "t.node": 24,
    # global_State
    "g.l_registry": 64, "g.allgc": 112,
    # Proto's upvalue descriptions, LClosure's upvalues, UpVal
    "p.sizeupvalues": 16, "p.upvalues": 80, "Upvaldesc": 16,
    "cl.upvals": 32, "uv.v": 16,
    # sizes
    "TValue": 16, "Node": 24, "LocVar": 16, "AbsLineInfo": 8,
    "Node.key_tt": 9, "Node.key_val": 16,
}
LAYOUTS = {"5.4.4": LAYOUT_54, "5.4.6": LAYOUT_54, "5.4.7": LAYOUT_54}

# Type tags (lobject.h): variant | collectable bit (64) where collectable.
T_NIL, T_FALSE, T_TRUE = 0x00, 0x01, 0x11
T_LIGHTUD, T_INT, T_FLOAT = 0x02, 0x03, 0x13
T_SHRSTR, T_LNGSTR, T_TABLE = 0x44, 0x54, 0x45
T_LCL, T_LCF, T_CCL = 0x46, 0x16, 0x66
T_USERDATA, T_THREAD = 0x47, 0x48
GC_SHRSTR, GC_LNGSTR, GC_THREAD = 0x04, 0x14, 0x08

CIST_C = 1 << 1      # callstatus: a C function
CIST_TAIL = 1 << 5   # callstatus: called by a tail call
LUA_YIELD = 1
MAXIWTHABS = 128     # ldebug.c: instructions between absolute line infos
MAX_GC_OBJECTS = 20000000   # bound on the walk of the allgc list
MAX_FRAMES = 200


NOT_LOOKED_UP = object()


class EvluaGdbError(Exception):
    pass


# Memory ===================================================================

def read_bytes(addr, size):
    try:
        return bytes(gdb.selected_inferior().read_memory(addr, size))
    except gdb.MemoryError as e:
        raise EvluaGdbError("cannot read memory at 0x%x: %s" % (addr, e))


def u8(addr):
    return read_bytes(addr, 1)[0]


def u16(addr):
    return struct.unpack("<H", read_bytes(addr, 2))[0]


def i32(addr):
    return struct.unpack("<i", read_bytes(addr, 4))[0]


def u32(addr):
    return struct.unpack("<I", read_bytes(addr, 4))[0]


def ptr(addr):
    return struct.unpack("<Q", read_bytes(addr, 8))[0]


def c_string(addr, limit=200):
    data = read_bytes(addr, limit)
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


# The Lua state ============================================================

class Lua:
    """Reads one evlua process's Lua state with the layout of its liblua."""

    def __init__(self):
        self.version = lua_version()
        if self.version not in LAYOUTS:
            raise EvluaGdbError(
                "Lua %s: this script knows the layouts of %s only"
                % (self.version, ", ".join(sorted(LAYOUTS))))
        self.o = LAYOUTS[self.version]
        self.running = running_thread()
        self.main = main_thread()
        self.g = ptr(self.main + self.o["L.l_G"])
        self.check_thread(self.main)
        self._names = None
        self._live = NOT_LOOKED_UP

    # --- values

    def tvalue(self, addr):
        """(tag, raw 8 bytes as an unsigned integer) of the TValue at addr."""
        return u8(addr + 8), ptr(addr)

    def string(self, ts):
        tag = u8(ts + 8)
        if tag == GC_SHRSTR:
            size = u8(ts + self.o["ts.shrlen"])
        elif tag == GC_LNGSTR:
            size = ptr(ts + self.o["ts.lnglen"])
        else:
            raise EvluaGdbError("0x%x is not a Lua string (tag %d)" % (ts, tag))
        data = read_bytes(ts + self.o["ts.contents"], min(size, 4096))
        return data.decode("utf-8", "replace")

    def check_thread(self, L):
        if u8(L + 8) != GC_THREAD or ptr(L + self.o["L.l_G"]) != self.g:
            raise EvluaGdbError(
                "0x%x is not a thread of this Lua state: the layout of Lua "
                "%s does not fit this library" % (L, self.version))

    def describe(self, addr):
        """A short text for the TValue at addr, as Lua's tostring would."""
        tag, raw = self.tvalue(addr)
        if tag == T_NIL:
            return "nil"
        if tag in (T_FALSE, T_TRUE):
            return "true" if tag == T_TRUE else "false"
        if tag == T_INT:
            return str(struct.unpack("<q", struct.pack("<Q", raw))[0])
        if tag == T_FLOAT:
            return repr(struct.unpack("<d", struct.pack("<Q", raw))[0])
        if tag in (T_SHRSTR, T_LNGSTR):
            text = self.string(raw)
            if len(text) > 60:
                text = text[:60] + "..."
            return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')
        names = {T_TABLE: "table", T_LCL: "function", T_CCL: "function",
                 T_LCF: "function", T_USERDATA: "userdata",
                 T_LIGHTUD: "userdata", T_THREAD: "thread"}
        if tag in names:
            return "%s: 0x%x" % (names[tag], raw)
        return "? (tag %d)" % tag

    # --- function names: globals and the fields of loaded modules

    def registry_slot(self, n):
        tag, table = self.tvalue(self.g + self.o["g.l_registry"])
        if tag != T_TABLE:
            return None
        if n > u32(table + self.o["t.alimit"]):
            return None
        return ptr(table + self.o["t.array"]) + (n - 1) * self.o["TValue"]

    def table_fields(self, table):
        """(name, value address) of the string keys of a table's hash part."""
        o = self.o
        count = 1 << u8(table + o["t.lsizenode"])
        nodes = ptr(table + o["t.node"])
        for i in range(min(count, 1 << 16)):
            node = nodes + i * o["Node"]
            if u8(node + o["Node.key_tt"]) != T_SHRSTR:
                continue
            yield self.string(ptr(node + o["Node.key_val"])), node

    def function_names(self):
        """{closure or C function address: "name"} for the functions in _G
        and in the tables of package.loaded (as "module.name"): the cheap
        names (Lua's own traceback reads the calling instruction instead,
        which would mean decoding bytecode here)."""
        if self._names is not None:
            return self._names
        names = {}
        globals_slot = self.registry_slot(2)   # LUA_RIDX_GLOBALS
        if globals_slot and u8(globals_slot + 8) == T_TABLE:
            g = ptr(globals_slot)
            tables = []
            for key, node in self.table_fields(g):
                tag, raw = self.tvalue(node)
                if tag in (T_LCL, T_LCF):
                    names.setdefault(raw, key)
                elif tag == T_TABLE and key == "package":
                    tables.append(raw)
            for package in tables:
                self.add_module_names(package, names)
        self._names = names
        return names

    def add_module_names(self, package, names):
        for key, node in self.table_fields(package):
            tag, loaded = self.tvalue(node)
            if key != "loaded" or tag != T_TABLE:
                continue
            for module, mnode in self.table_fields(loaded):
                mtag, mtable = self.tvalue(mnode)
                if mtag != T_TABLE or module == "_G":
                    continue
                for fname, fnode in self.table_fields(mtable):
                    ftag, fn = self.tvalue(fnode)
                    if ftag in (T_LCL, T_LCF):
                        names.setdefault(fn, module + "." + fname)

    # --- event.lua's task records

    def loaded_module(self, name):
        """The table package.loaded[name], or None."""
        globals_slot = self.registry_slot(2)
        if not globals_slot or u8(globals_slot + 8) != T_TABLE:
            return None
        for key, node in self.table_fields(ptr(globals_slot)):
            tag, package = self.tvalue(node)
            if key == "package" and tag == T_TABLE:
                for lkey, lnode in self.table_fields(package):
                    ltag, loaded = self.tvalue(lnode)
                    if lkey == "loaded" and ltag == T_TABLE:
                        for mkey, mnode in self.table_fields(loaded):
                            mtag, module = self.tvalue(mnode)
                            if mkey == name and mtag == T_TABLE:
                                return module
        return None

    def upvalue(self, closure, wanted):
        """The address of the TValue of closure's upvalue named wanted."""
        o = self.o
        proto = ptr(closure + o["cl.p"])
        descs = ptr(proto + o["p.upvalues"])
        for i in range(i32(proto + o["p.sizeupvalues"])):
            name = ptr(descs + i * o["Upvaldesc"])
            if name and self.string(name) == wanted:
                upval = ptr(closure + o["cl.upvals"] + 8 * i)
                return ptr(upval + o["uv.v"])
        return None

    def live_tasks(self):
        """event.lua's `live` table (coroutine -> task record), found as an
        upvalue of one of event's functions; None if not there."""
        if self._live is not NOT_LOOKED_UP:
            return self._live
        self._live = None
        event = self.loaded_module("event")
        for _, node in self.table_fields(event) if event else ():
            tag, fn = self.tvalue(node)
            slot = self.upvalue(fn, "live") if tag == T_LCL else None
            if slot and u8(slot + 8) == T_TABLE:
                self._live = ptr(slot)
                break
        return self._live

    def task_slots(self):
        """The slot numbers of a task record's STATE, WHAT and ON, read
        from event._slots (event.lua's own table of them), so a change
        of the record's layout reaches this script; None if not found."""
        event = self.loaded_module("event")
        for key, node in self.table_fields(event) if event else ():
            tag, slots = self.tvalue(node)
            if key != "_slots" or tag != T_TABLE:
                continue
            found = {}
            for name, snode in self.table_fields(slots):
                stag, value = self.tvalue(snode)
                if name in ("STATE", "WHAT", "ON") and stag == T_INT:
                    found[name] = value
            if len(found) == 3:
                return found["STATE"], found["WHAT"], found["ON"]
        return None

    def array_slot(self, table, n):
        if n > u32(table + self.o["t.alimit"]):
            return None
        return ptr(table + self.o["t.array"]) + (n - 1) * self.o["TValue"]

    def waits_on(self, L):
        """What event.lua's record of the task in coroutine L says it waits
        for ("sleep 3600", "read table: 0x..."), or None."""
        live, slots = self.live_tasks(), self.task_slots()
        if live is None or slots is None:
            return None
        state_at, what_at, on_at = slots
        o = self.o
        nodes = ptr(live + o["t.node"])
        for i in range(min(1 << u8(live + o["t.lsizenode"]), 1 << 20)):
            node = nodes + i * o["Node"]
            if (u8(node + o["Node.key_tt"]) != T_THREAD
                    or ptr(node + o["Node.key_val"]) != L):
                continue
            tag, task = self.tvalue(node)
            state = self.array_slot(task, state_at) if tag == T_TABLE else None
            what = self.array_slot(task, what_at) if state else None
            if what is None or u8(state + 8) not in (T_SHRSTR, T_LNGSTR):
                return None
            if self.string(ptr(state)) != "waiting":
                return None
            words = [self.describe(what).strip('"')]
            on = self.array_slot(task, on_at)
            if on is not None and u8(on + 8) not in (T_NIL, T_FALSE):
                words.append(self.describe(on))
            return " ".join(words)
        return None

    # --- frames

    def frames(self, L, live_pc=None):
        """The frames of thread L, innermost first, as dicts."""
        o = self.o
        base_ci = L + o["L.base_ci"]
        ci = ptr(L + o["L.ci"])
        out = []
        while ci and ci != base_ci and len(out) < MAX_FRAMES:
            out.append(self.frame(ci, live_pc if not out else None))
            ci = ptr(ci + o["ci.previous"])
        return out

    def frame(self, ci, live_pc):
        o = self.o
        func = ptr(ci + o["ci.func"])
        tag, raw = self.tvalue(func)
        status = u16(ci + o["ci.callstatus"])
        f = {"ci": ci, "base": func + o["TValue"],
             "tail": bool(status & CIST_TAIL)}
        if tag == T_LCL and not status & CIST_C:
            proto = ptr(raw + o["cl.p"])
            f.update(self.lua_frame(ci, proto, live_pc))
            f["closure"] = raw
        elif tag in (T_CCL, T_LCF):
            cfunc = raw if tag == T_LCF else ptr(raw + o["cl.f"])
            f.update(kind="C", cfunc=cfunc)
        else:
            raise EvluaGdbError("frame 0x%x: no function at its base (tag %d)"
                                % (ci, tag))
        return f

    def lua_frame(self, ci, proto, live_pc):
        o = self.o
        code = ptr(proto + o["p.code"])
        sizecode = i32(proto + o["p.sizecode"])
        pc_addr = live_pc(code, sizecode) if live_pc else None
        if pc_addr is None:
            pc_addr = ptr(ci + o["ci.savedpc"])
        pc = (pc_addr - code) // 4 - 1
        source = self.string(ptr(proto + o["p.source"]))
        return {"kind": "Lua", "proto": proto, "pc": pc,
                "source": short_source(source),
                "line": self.line_of(proto, pc),
                "linedefined": i32(proto + o["p.linedefined"])}

    def line_of(self, proto, pc):
        """luaG_getfuncline: the line of instruction pc of proto."""
        o = self.o
        lineinfo = ptr(proto + o["p.lineinfo"])
        if lineinfo == 0:
            return -1
        nabs = i32(proto + o["p.sizeabslineinfo"])
        absinfo = ptr(proto + o["p.abslineinfo"])
        size = o["AbsLineInfo"]
        if nabs == 0 or pc < i32(absinfo):
            basepc, line = -1, i32(proto + o["p.linedefined"])
        else:
            i = max(pc // MAXIWTHABS - 1, 0)
            while i + 1 < nabs and pc >= i32(absinfo + (i + 1) * size):
                i += 1
            basepc = i32(absinfo + i * size)
            line = i32(absinfo + i * size + 4)
        if pc > basepc:
            deltas = read_bytes(lineinfo + basepc + 1, pc - basepc)
            line += sum(struct.unpack("<%db" % len(deltas), deltas))
        return line

    def locals(self, frame):
        """(name, value text) of the active locals of a Lua frame."""
        o = self.o
        proto = frame["proto"]
        locvars = ptr(proto + o["p.locvars"])
        out = []
        for i in range(i32(proto + o["p.sizelocvars"])):
            var = locvars + i * o["LocVar"]
            startpc, endpc = i32(var + 8), i32(var + 12)
            if startpc > frame["pc"]:
                break   # sorted by startpc: no later one is active
            if frame["pc"] < endpc:
                slot = frame["base"] + len(out) * o["TValue"]
                out.append((self.string(ptr(var)), self.describe(slot)))
        return out

    # --- threads

    def threads(self):
        """Every thread of the state, the main one first."""
        found = [self.main]
        obj = ptr(self.g + self.o["g.allgc"])
        for _ in range(MAX_GC_OBJECTS):
            if obj == 0:
                break
            if u8(obj + 8) == GC_THREAD and obj != self.main:
                found.append(obj)
            obj = ptr(obj)
        return found

    def status(self, L):
        """coroutine.status's word for L (and "idle" for the main thread
        while the loop waits)."""
        o = self.o
        if L == self.running:
            return "running"
        if u8(L + o["L.status"]) == LUA_YIELD:
            return "suspended"
        if u8(L + o["L.status"]) != 0:
            return "dead"   # died of an error
        if ptr(L + o["L.ci"]) != L + o["L.base_ci"]:
            return "normal"   # it resumed another coroutine
        if L == self.main:
            return "idle" if self.running is None else "normal"
        stack, top = ptr(L + o["L.stack"]), ptr(L + o["L.top"])
        return "suspended" if top > stack + o["TValue"] else "dead"

    def name_of(self, frame):
        if frame["kind"] == "C":
            name = self.function_names().get(frame["cfunc"])
            return "function %s" % (name or c_symbol(frame["cfunc"]))
        name = self.function_names().get(frame["closure"])
        where = "%s:%d" % (frame["source"], frame["linedefined"])
        if frame["linedefined"] == 0:
            return "main chunk of %s" % frame["source"]
        if name:
            return "function %s <%s>" % (name, where)
        return "function <%s>" % where


def short_source(source):
    """The chunk name as Lua's short_src shows it."""
    if source.startswith("@") or source.startswith("="):
        return source[1:]
    first = source.split("\n", 1)[0]
    if len(first) > 40 or "\n" in source:
        first = first[:40] + "..."
    return '[string "%s"]' % first


def lua_version():
    try:
        ident = gdb.parse_and_eval("(const char *)&lua_ident").string()
    except gdb.error:
        raise EvluaGdbError("no liblua here (no lua_ident symbol): "
                            "not an evlua process?")
    m = re.search(r"Lua (\d+\.\d+\.\d+)", ident)
    if not m:
        raise EvluaGdbError("unexpected lua_ident: %r" % ident)
    return m.group(1)


def running_thread():
    try:
        value = gdb.parse_and_eval("'linterrupt.c'::running_thread")
    except gdb.error:
        raise EvluaGdbError("no symbol running_thread: not an evlua "
                            "process, or evlua built without -g")
    addr = int(value)
    return addr or None


def main_thread():
    """The runtime's L, found through the libev default loop: the runtime
    is the loop's userdata, and its `loop` field points back at the loop
    (a check that needs no knowledge of libev's struct)."""
    try:
        loop = int(gdb.parse_and_eval("*(void **)&ev_default_loop_ptr"))
        gdb.lookup_type("evlua_runtime")   # evlua's debug info is loaded
    except gdb.error as e:
        raise EvluaGdbError("cannot find the evlua runtime: %s" % e)
    loop_field = int(gdb.parse_and_eval("&((evlua_runtime *)0)->loop"))
    l_field = int(gdb.parse_and_eval("&((evlua_runtime *)0)->L"))
    if loop == 0:
        raise EvluaGdbError("libev's default loop is not created yet")
    for off in range(0, 16384, 8):
        candidate = ptr(loop + off)
        if candidate < 4096 or candidate % 8:
            continue
        try:
            if ptr(candidate + loop_field) == loop:
                return ptr(candidate + l_field)
        except EvluaGdbError:
            continue
    raise EvluaGdbError("cannot find the evlua runtime beside libev's loop")


def c_symbol(addr):
    """The C symbol at addr, else the address and its library."""
    text = gdb.execute("info symbol 0x%x" % addr, to_string=True).strip()
    m = re.match(r"(\S+)( \+ \d+)? in section", text)
    if m and not m.group(2):
        return m.group(1)
    library = gdb.solib_name(addr)
    where = " in " + library.rsplit("/", 1)[-1] if library else ""
    return "0x%x%s" % (addr, where)


# The running function's pc ================================================

# The VM keeps its pc in a local that lives across calls: a callee-saved
# register on x86-64.
REGISTERS = ("rbx", "rbp", "r12", "r13", "r14", "r15")


def live_pc_finder():
    """luaV_execute keeps the pc of the running Lua function in a local
    (a register): ci->savedpc is only stored at calls and hooks, so in a
    loop without calls it is stale. This returns a function that looks,
    in the innermost C frames, for a register pointing into the running
    function's code, and None when none does (then savedpc is right: the
    function is calling, or the process is idle)."""
    values = []
    try:
        frame = gdb.newest_frame()
        for _ in range(8):
            if frame is None:
                break
            for r in REGISTERS:
                try:
                    values.append(int(frame.read_register(r)))
                except (gdb.error, ValueError):
                    pass
            frame = frame.older()
    except gdb.error:
        pass

    def find(code, sizecode):
        for v in values:
            if code <= v < code + 4 * sizecode:
                # the pc points past the instruction running, as savedpc
                # does; just after a jump it points at the target (the
                # first instruction included), one instruction early
                return max(v, code + 4)
        return None
    return find


# Output ===================================================================

def format_frame(lua, n, f):
    if f["kind"] == "C":
        text = "#%d  [C] %s" % (n, lua.name_of(f))
    else:
        text = "#%d  %s:%d in %s" % (n, f["source"], f["line"], lua.name_of(f))
    return text


def print_frames(lua, frames, indent=""):
    if not frames:
        gdb.write(indent + "(no Lua frames)\n")
    for n, f in enumerate(frames):
        gdb.write(indent + format_frame(lua, n, f) + "\n")
        if f["tail"]:   # its caller's frame is gone, as Lua's traceback says
            gdb.write(indent + "    (...tail calls...)\n")


def selected_stack(lua):
    """The thread "lua bt" shows and its frames."""
    if lua.running is not None:
        lua.check_thread(lua.running)
        return lua.running, lua.frames(lua.running, live_pc_finder())
    return lua.main, lua.frames(lua.main)


# Commands =================================================================

class LuaPrefix(gdb.Command):
    """Lua stacks of an evlua process: lua bt, lua coroutines, lua locals."""

    def __init__(self):
        super().__init__("lua", gdb.COMMAND_STACK, gdb.COMPLETE_NONE, True)


class LuaCommand(gdb.Command):
    def invoke(self, arg, from_tty):
        try:
            self.run(Lua(), arg.strip())
        except EvluaGdbError as e:
            raise gdb.GdbError("evlua-gdb: %s" % e)


class LuaBt(LuaCommand):
    """lua bt: the Lua stack of the running coroutine, or of the main
    thread when the loop is idle (innermost frame first)."""

    def __init__(self):
        super().__init__("lua bt", gdb.COMMAND_STACK)

    def run(self, lua, arg):
        L, frames = selected_stack(lua)
        if lua.running is None:
            gdb.write("Lua %s, no Lua code running (the loop is idle); "
                      "main thread 0x%x:\n" % (lua.version, L))
        else:
            gdb.write("Lua %s, running thread 0x%x:\n" % (lua.version, L))
        print_frames(lua, frames)


class LuaCoroutines(LuaCommand):
    """lua coroutines: every thread of the Lua state (the main one first)
    with its status and its stack."""

    def __init__(self):
        super().__init__("lua coroutines", gdb.COMMAND_STACK)

    def run(self, lua, arg):
        threads = lua.threads()
        gdb.write("Lua %s, %d threads:\n" % (lua.version, len(threads)))
        for L in threads:
            status = lua.status(L)
            label = "main thread" if L == lua.main else "coroutine"
            waits = lua.waits_on(L) if status == "suspended" else None
            if waits:
                status += ", waiting: " + waits
            gdb.write("%s 0x%x (%s)\n" % (label, L, status))
            live = live_pc_finder() if status == "running" else None
            if status != "dead":
                print_frames(lua, lua.frames(L, live), "    ")


class LuaLocals(LuaCommand):
    """lua locals [N]: the locals of Lua frame N (as numbered by lua bt;
    default 0) and their values."""

    def __init__(self):
        super().__init__("lua locals", gdb.COMMAND_DATA)

    def run(self, lua, arg):
        n = int(arg) if arg else 0
        _, frames = selected_stack(lua)
        if not 0 <= n < len(frames):
            raise EvluaGdbError("no frame #%d (there are %d)"
                                % (n, len(frames)))
        f = frames[n]
        gdb.write(format_frame(lua, n, f) + "\n")
        if f["kind"] == "C":
            gdb.write("    (a C function: no Lua locals)\n")
            return
        variables = lua.locals(f)
        if not variables:
            gdb.write("    (no locals)\n")
        for name, value in variables:
            gdb.write("    %s = %s\n" % (name, value))


LuaPrefix()
LuaBt()
LuaCoroutines()
LuaLocals()
