/* getppid_quick.c — quick check of the per-syscall floor: best of 5 x N getppid. usage: ./getppid_quick [N] */
#include "common.h"
int main(int argc, char **argv) { long n = argc > 1 ? atol(argv[1]) : 200000; double r;
  BEST_OF(r, 5, n, syscall(SYS_getppid)); printf("getppid best-of-5 N=%ld: %.1f ns/op\n", n, r); return 0; }
