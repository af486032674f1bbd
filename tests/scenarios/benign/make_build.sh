#!/bin/sh
# make with a few targets, a clean and a rebuild.
set -e
printf 'int main(void) { return 0; }\n' > hello.c
printf 'all: hello\nhello: hello.o\n\tgcc -o hello hello.o\nhello.o: hello.c\n\tgcc -c hello.c\nclean:\n\trm -f hello hello.o\n' > Makefile
make -s
./hello
make -s clean
make -s
./hello
echo ok
