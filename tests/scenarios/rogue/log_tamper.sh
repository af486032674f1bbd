#!/bin/sh
# expect: sensitive_write
# Covering tracks: truncating system logs and the shell history.
for round in $(seq 1 50); do
  echo > /var/log/auth.log 2>/dev/null
  rm -f /var/log/syslog 2>/dev/null
  echo > "$HOME/.bash_history" 2>/dev/null
  sleep 0.1
done
touch finished
