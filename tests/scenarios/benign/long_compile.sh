#!/bin/sh
# A longer C build: 24 translation units, a library, a program, run.
set -e
mkdir -p c
for i in $(seq 1 24); do
  printf 'int f%s(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * %s; return s; }\n' "$i" "$i" > "c/f$i.c"
done
printf 'int f1(int);\nint main(void) { return f1(3) == 3 ? 0 : 1; }\n' > c/main.c
for f in c/f*.c; do gcc -O2 -c "$f" -o "${f%.c}.o"; done
ar rcs c/libf.a c/f*.o
gcc -O2 c/main.c -Lc -lf -o c/prog
./c/prog
echo ok
