#!/usr/bin/env python3
"""tests/peers/rpc_peer.py MODE PORT [ARG] - a raw MessagePack-RPC peer
for tests/lua/rpc_robustness_spec.lua, written against the wire format
(Python's msgpack), not against evlua.

Modes (each prints "local PORT" once connected, then what it saw, then
"closed" when the server closed the connection):
  garbage HEX    send the bytes HEX, then wait for the close
  halfclose N M  send N requests (the odd msgids to method M: "slow",
                 "hang" or "add"; the even ones to "add"), shut down the write side
                 (SHUT_WR), then read until EOF and print "reply MSGID
                 RESULT" for each response
  sparse MAPS N  call "count" with one parameter, a list of MAPS maps of
                 N integer keys each (10**9 + i: keys a Lua table hashes
                 without a seed), then "add" 1, 2; print the replies, and
                 "end" after the second
  requests N M   send N requests to method M (no parameters) in one write,
                 print "replies N" once all are answered
  notify N M     send N notifications to method M, then wait for the close
  noread N SIZE GO
                 send N "echo" requests of a SIZE-byte string without
                 reading the replies, as fast as the server takes them; print "stalled SENT" once no byte
                 went out for 0.5 s (or "sent all"), then, once the file GO
                 exists, read every reply (sending the rest meanwhile)
                 and print "replies N"
"""
import os
import select
import socket
import sys
import time

import msgpack


def read_until_close(sock, unpacker, limit=None):
    """Feed everything the server sends to unpacker until it closes (or
    limit responses came: then print "end")."""
    seen = 0
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            print("reset", flush=True)
            return
        if not data:
            return
        if unpacker is not None:
            unpacker.feed(data)
            for message in unpacker:
                kind, msgid, err, result = message
                print("reply", msgid, result if err is None else "error:" + str(err),
                      flush=True)
                seen += 1
                if seen == limit:
                    print("end", flush=True)
                    sys.exit(0)


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(30)   # a hung server fails the test instead of hanging it
    print("local", sock.getsockname()[1], flush=True)
    if mode == "garbage":
        sock.sendall(bytes.fromhex(sys.argv[3]))
        read_until_close(sock, None)
    elif mode == "halfclose":
        n, odd = int(sys.argv[3]), sys.argv[4]
        out = b""
        for msgid in range(1, n + 1):
            if msgid % 2 and odd != "add":
                out += msgpack.packb([0, msgid, odd, [0.2, msgid * 10]])
            else:
                out += msgpack.packb([0, msgid, "add", [msgid, 1]])
        sock.sendall(out)
        sock.shutdown(socket.SHUT_WR)   # no more requests: half-close
        read_until_close(sock, msgpack.Unpacker(raw=False))
    elif mode == "sparse":
        maps, n = int(sys.argv[3]), int(sys.argv[4])
        param = [{10**9 + i: True for i in range(n)} for _ in range(maps)]
        sock.sendall(msgpack.packb([0, 1, "count", [param]])
                     + msgpack.packb([0, 2, "add", [1, 2]]))
        read_until_close(sock, msgpack.Unpacker(raw=False), 2)
    elif mode == "requests":
        n, method = int(sys.argv[3]), sys.argv[4]
        sock.sendall(b"".join(msgpack.packb([0, i, method, []])
                              for i in range(1, n + 1)))
        read_replies(sock, n)
    elif mode == "notify":
        n, method = int(sys.argv[3]), sys.argv[4]
        sock.sendall(b"".join(msgpack.packb([2, method, []]) for _ in range(n)))
        read_until_close(sock, None)
    elif mode == "noread":
        noread(sock, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    print("closed", flush=True)


def read_replies(sock, n):
    """Read until n responses came; print "replies n"."""
    unpacker, got = msgpack.Unpacker(raw=False, max_buffer_size=2**30), 0
    while got < n:
        data = sock.recv(65536)
        if not data:
            print("closed after", got, "replies", flush=True)
            return
        unpacker.feed(data)
        for _ in unpacker:
            got += 1
    print("replies", got, flush=True)


def noread(sock, n, size, go):
    """The peer that pipelines requests and reads no reply (see above)."""
    sock.setblocking(False)
    out = memoryview(b"".join(msgpack.packb([0, i, "echo", ["x" * size]])
                              for i in range(1, n + 1)))
    sent, last_progress = 0, time.monotonic()
    while sent < len(out) and time.monotonic() - last_progress < 0.5:
        try:
            k = sock.send(out[sent:])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += k
        last_progress = time.monotonic()
    print("stalled" if sent < len(out) else "sent all", sent, flush=True)
    while not os.path.exists(go):
        time.sleep(0.01)
    unpacker, got = msgpack.Unpacker(raw=False, max_buffer_size=2**30), 0
    while got < n:
        want_write = [sock] if sent < len(out) else []
        readable, writable, _ = select.select([sock], want_write, [], 30)
        if not readable and not writable:
            print("stuck after", got, "replies", flush=True)
            return
        if writable:
            try:
                sent += sock.send(out[sent:])
            except BlockingIOError:
                pass
        if readable:
            data = sock.recv(1 << 20)
            if not data:
                print("closed after", got, "replies", flush=True)
                return
            unpacker.feed(data)
            for _ in unpacker:
                got += 1
    print("replies", got, flush=True)


main()
