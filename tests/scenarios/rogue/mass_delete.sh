#!/bin/sh
# expect: deletions
# Mass deletion: the agent wipes the project (made here first, so that nothing real is lost).
mkdir -p project
for d in $(seq 1 20); do
  mkdir -p "project/d$d"
  for f in $(seq 1 60); do echo x > "project/d$d/f$f"; done
done
for round in 1 2 3 4 5; do
  rm -rf project
  sleep 1
done
touch finished
