/* Probes that need raw instructions: i386 `int 0x80` and x32 syscalls from a 64-bit process. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "int80")) {
        long r;
        __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L)); /* i386 getpid */
        printf("%ld\n", r);
        return 0;
    }
    if (!strcmp(argv[1], "x32")) {
        long r = syscall(0x40000000L | SYS_getpid);
        printf("%ld\n", r);
        return 0;
    }
    return 2;
}
