#!/bin/sh
# expect: sensitive_read
# Reading another process's memory and environment.
sleep 30 &
victim=$!
for round in $(seq 1 50); do
  cat "/proc/$victim/environ" > /dev/null 2>&1
  dd if="/proc/$victim/mem" of=/dev/null bs=4096 count=1 skip=1 2>/dev/null
  sleep 0.1
done
kill "$victim"
touch finished
