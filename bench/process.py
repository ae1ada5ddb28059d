# bench/process.py - the peer of bench/process.lua: N runs of /bin/true,
# CONC at a time, stdout captured, with Python's asyncio subprocesses.
# Prints "spawns <runs/s>".
#   /usr/bin/python3 bench/process.py [N [CONC]]
import asyncio
import sys
import time


async def worker(state):
    while state["left"] > 0:
        state["left"] -= 1
        proc = await asyncio.create_subprocess_exec(
            "/bin/true", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out == b"" and proc.returncode == 0, "a run failed"


async def main(n, conc):
    state = {"left": n}
    t0 = time.monotonic()
    await asyncio.gather(*(worker(state) for _ in range(conc)))
    print("spawns %.0f" % (n / (time.monotonic() - t0)))


n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
conc = int(sys.argv[2]) if len(sys.argv) > 2 else 16
asyncio.run(main(n, conc))
