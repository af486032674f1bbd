/* common helpers for the alt-exp measurements */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static inline uint64_t now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static inline uint64_t cpu_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
#define MAX_LOOP_SEC 20ull   /* hard time bound for any single timed loop */
#define DIE(...) do { fprintf(stderr, __VA_ARGS__); fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno)); exit(2); } while (0)

/* run body n times; returns ns/op; bounded by MAX_LOOP_SEC (checks clock every 1024 iters) */
#define TIME_LOOP(res, n, body) do { \
    uint64_t _t0 = now_ns(), _lim = _t0 + MAX_LOOP_SEC*1000000000ull; long _i; \
    for (_i = 0; _i < (long)(n); _i++) { body; \
        if ((_i & 1023) == 1023 && now_ns() > _lim) { _i++; fprintf(stderr, "time bound hit after %ld\n", _i); break; } } \
    (res) = (double)(now_ns() - _t0) / (double)_i; } while (0)

/* best of R runs */
#define BEST_OF(best, R, n, body) do { double _b = 1e30, _r; \
    for (int _k = 0; _k < (R); _k++) { TIME_LOOP(_r, n, body); if (_r < _b) _b = _r; } (best) = _b; } while (0)
