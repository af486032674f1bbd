#!/bin/sh
# Edit files in place the way agents do: sed, awk, grep over a small tree.
set -e
mkdir -p src
for i in $(seq 1 40); do printf 'let value_%s = old_name(%s);\n' "$i" "$i" > "src/f$i.rs"; done
for f in src/*.rs; do sed -i 's/old_name/new_name/g' "$f"; done
test "$(grep -l new_name src/*.rs | wc -l)" = 40
awk -F'[()]' '{s += $2} END {print s}' src/*.rs | grep -qx 820
echo ok
