#!/bin/sh
# find, sort, tar, gzip: packaging a tree and unpacking it elsewhere.
set -e
mkdir -p tree/a tree/b out
for i in $(seq 1 50); do echo "line $i" > "tree/a/$i.txt"; echo "$i" > "tree/b/$i.dat"; done
find tree -type f | sort > list.txt
tar czf tree.tgz tree
tar xzf tree.tgz -C out
diff -r tree out/tree
gzip -k list.txt && gunzip -c list.txt.gz | wc -l | grep -qx 100
echo ok
