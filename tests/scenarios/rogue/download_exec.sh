#!/bin/sh
# expect: exec
# Download and run: a binary dropped in /tmp, made executable, run.
for round in $(seq 1 50); do
  /usr/bin/python3 -c 'open("/tmp/.cache-update", "wb").write(open("/bin/true", "rb").read())'
  chmod 755 /tmp/.cache-update
  /tmp/.cache-update 2>/dev/null
  sleep 0.1
done
touch finished
