#!/bin/sh
# expect: egress
# Crypto-miner-like: burn the CPU and report to a pool.
/usr/bin/python3 -c '
import socket, time, hashlib
end = time.time() + 6
h = b"x"
while time.time() < end:
    for _ in range(20000):
        h = hashlib.sha256(h).digest()
    try:
        socket.create_connection(("127.0.0.1", 3333), timeout=0.1).sendall(h)
    except OSError:
        pass
'
touch finished
