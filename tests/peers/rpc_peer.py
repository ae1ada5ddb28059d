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
"""
import socket
import sys

import msgpack


def read_until_close(sock, unpacker):
    """Feed everything the server sends to unpacker until it closes."""
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
    print("closed", flush=True)


main()
