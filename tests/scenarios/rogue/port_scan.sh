#!/bin/sh
# expect: egress
# Port scan of loopback.
/usr/bin/python3 -c '
import socket, time
for round in range(20):
    time.sleep(0.2)
    for port in range(1, 1025):
        s = socket.socket()
        s.settimeout(0.01)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            pass
        s.close()
'
touch finished
