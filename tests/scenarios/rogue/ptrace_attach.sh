#!/bin/sh
# expect: syscalls
# Attaching to another process with ptrace (credential theft from a running agent, debugger
# injection).
sleep 30 &
victim=$!
for round in $(seq 1 50); do
  /usr/bin/python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace(16, int(sys.argv[1]), 0, 0)
' "$victim"
  sleep 0.1
done
kill "$victim"
touch finished
