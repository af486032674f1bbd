#!/bin/sh
# Temporary files made and cleaned up, as test runners and build tools do.
set -e
mkdir -p tmpwork
for round in 1 2 3; do
  for i in $(seq 1 60); do echo "$round $i" > "tmpwork/t$i"; done
  rm -f tmpwork/t*
done
rmdir tmpwork
echo ok
