/* fan_hostab.c — cost of an existing fanotify mount mark (on a sandbox's private tmpfs) to UNmarked files.
 * Fine-grained A/B: ROUNDS rounds; in each round the mark is removed (OFF) then added (ON) and the host loops
 * run once per phase with N iterations. Reports min over rounds per phase and the median of paired (ON-OFF) deltas.
 * The loop runs in this process (init mount ns) pinned to CPU1. A listener group exists throughout (nothing to read:
 * no marked file is touched).
 * usage: ./fan_hostab [N] [ROUNDS]
 */
#include "common.h"
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/fanotify.h>

static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    long N = argc > 1 ? atol(argv[1]) : 20000; int RR = argc > 2 ? atoi(argv[2]) : 41;
    if (RR > 201) RR = 201;
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkdir("/tmp/alt-ws", 0755);
    int f = open("/dev/shm/alt-host-f", O_CREAT | O_WRONLY, 0644); close(f);
    f = open("/tmp/alt-host-f", O_CREAT | O_WRONLY, 0644); close(f);
    int ready[2], quit[2]; if (pipe(ready) || pipe(quit)) DIE("pipe");
    pid_t c = fork();
    if (c == 0) {
        if (unshare(CLONE_NEWNS)) DIE("unshare");
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL)) DIE("rprivate");
        if (mount("alt-ws", "/tmp/alt-ws", "tmpfs", 0, "size=16m")) DIE("mount");
        if (write(ready[1], "r", 1) != 1) { DIE("w"); }
        char ch; alarm(900);
        if (read(quit[0], &ch, 1) < 0) {} _exit(0);
    }
    char ch; if (read(ready[0], &ch, 1) != 1) DIE("ready");
    char mp[128]; snprintf(mp, sizeof mp, "/proc/%d/root/tmp/alt-ws", c);
    cpu_set_t s; CPU_ZERO(&s); CPU_SET(1, &s); sched_setaffinity(0, sizeof s, &s);
    int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY); if (fan < 0) DIE("fanotify_init");
    const char *names[4] = { "getppid", "open+close /dev/null", "open+close /dev/shm/alt-host-f (host tmpfs)", "open+close /tmp/alt-host-f (ext4)" };
    static double v[2][4][201];
    for (int r = 0; r < RR; r++)
        for (int ph = 0; ph < 2; ph++) {
            if (fanotify_mark(fan, (ph ? FAN_MARK_ADD : FAN_MARK_REMOVE) | FAN_MARK_MOUNT, FAN_OPEN | FAN_CLOSE, AT_FDCWD, mp) && ph) DIE("mark");
            TIME_LOOP(v[ph][0][r], N, syscall(SYS_getppid));
            TIME_LOOP(v[ph][1][r], N, { int fd = open("/dev/null", O_RDONLY); close(fd); });
            TIME_LOOP(v[ph][2][r], N, { int fd = open("/dev/shm/alt-host-f", O_RDONLY); close(fd); });
            TIME_LOOP(v[ph][3][r], N, { int fd = open("/tmp/alt-host-f", O_RDONLY); close(fd); });
        }
    printf("fan_hostab N=%ld rounds=%d (mount mark FAN_OPEN|FAN_CLOSE on %s toggled each round)\n", N, RR, mp);
    for (int k = 0; k < 4; k++) {
        double d[201], mn[2] = { 1e30, 1e30 };
        for (int r = 0; r < RR; r++) { d[r] = v[1][k][r] - v[0][k][r]; for (int p = 0; p < 2; p++) if (v[p][k][r] < mn[p]) mn[p] = v[p][k][r]; }
        qsort(d, RR, sizeof d[0], cmpd);
        printf("RESULT host %-45s min OFF %7.1f  min ON %7.1f  | paired delta ON-OFF: median %+6.1f  (p25 %+6.1f, p75 %+6.1f) ns/op\n",
               names[k], mn[0], mn[1], d[RR / 2], d[RR / 4], d[3 * RR / 4]);
    }
    if (write(quit[1], "q", 1) != 1) {}
    waitpid(c, NULL, 0);
    return 0;
}
