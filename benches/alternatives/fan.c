/* fan.c — fanotify on a sandbox's own mount / filesystem, interleaved A/B measurement.
 * usage: ./fan MODE [N] [opts...]
 *   MODE: base      no fanotify group at all; both "phases" are unmarked (A/A control)
 *         mount     FAN_MARK_MOUNT, FAN_CLASS_NOTIF, FAN_OPEN|FAN_CLOSE_WRITE|FAN_CLOSE_NOWRITE, one fd per event
 *         mountfid  same but FAN_REPORT_FID (no fd per event; file handle instead)
 *         fs        FAN_MARK_FILESYSTEM + FAN_REPORT_DFID_NAME, CREATE|DELETE|MOVED_FROM|MOVED_TO|MODIFY
 *   opts:  unlimited  FAN_UNLIMITED_QUEUE
 *          readlink   listener resolves every event fd to a path (readlink /proc/self/fd/N)
 *          noread     listener does not read during the sandbox's loops (only drains afterwards)
 *          pin        sandbox loop on CPU1, listener/host on CPU0
 *          big        /tmp/alt-ws tmpfs is 2 GiB instead of 16 MiB (queued events pin deleted files)
 *          distinct   the marked open+close loop cycles over 20000 distinct files (defeats event merging)
 * Sandbox = child that unshare(CLONE_NEWNS|CLONE_NEWPID), makes / rprivate, mounts tmpfs on
 * /tmp/alt-ws (the marked one) and /tmp/alt-other (never marked); its child (pid 1 in the new pidns)
 * runs the loops.  Listener = parent (init ns); it marks via /proc/<child>/root/tmp/alt-ws.
 * R=5 rounds; each round runs phase OFF (no mark) then phase ON (mark added); every loop runs once per
 * phase per round; reported figure = best of the 5 rounds.  Host loops run in the parent (init ns)
 * after the sandbox's loops in the same phase.
 */
#include "common.h"
#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/fanotify.h>

#ifndef FAN_REPORT_DFID_NAME
#define FAN_REPORT_DFID_NAME (0x00000c00)
#endif
#ifndef FAN_EVENT_INFO_TYPE_DFID_NAME
#define FAN_EVENT_INFO_TYPE_DFID_NAME 2
#endif

static long N = 200000;
#define R 5
static const char *mode;
static int opt_unl, opt_readlink, opt_noread, opt_pin, opt_distinct;
static const char *ws_size = "size=16m";
#define NDISTINCT 20000

static void pin(int cpu) { if (!opt_pin) return; cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof s, &s); }

#define NSB 5
static const char *sb_names[NSB] = {
    "sandbox getppid",
    "sandbox open+close /tmp/alt-ws/f (marked mount/fs in ON)",
    "sandbox open+close /tmp/alt-other/f (other tmpfs, never marked)",
    "sandbox open+close /dev/null",
    "sandbox creat+write1+close+rename+unlink in /tmp/alt-ws (N/4)",
};
#define NH 4
static const char *h_names[NH] = {
    "host(init ns) getppid",
    "host(init ns) open+close /tmp/alt-host-f (ext4 /)",
    "host(init ns) open+close /dev/null",
    "host(init ns) open+close /dev/shm/alt-host-f (host tmpfs)",
};

static void sandbox_main(int cmd_fd, int done_fd) {
    pin(1);
    double best[2][NSB]; for (int p = 0; p < 2; p++) for (int i = 0; i < NSB; i++) best[p][i] = 1e30;
    printf("[sandbox] getpid() inside the sandbox pidns = %d\n", getpid());
    char c;
    while (read(cmd_fd, &c, 1) == 1 && c != 'x') {
        int ph = c - '0'; double r[NSB];
        TIME_LOOP(r[0], N, syscall(SYS_getppid));
        /* unmarked loops first, so the listener is idle (nothing queued) while they run */
        TIME_LOOP(r[2], N, { int fd = open("/tmp/alt-other/f", O_RDONLY); if (fd < 0) DIE("open other"); close(fd); });
        TIME_LOOP(r[3], N, { int fd = open("/dev/null", O_RDONLY); if (fd < 0) DIE("open null"); close(fd); });
        if (opt_distinct) {   /* cycle through NDISTINCT different files so queued events cannot merge */
            char p[64]; long j = 0;
            TIME_LOOP(r[1], N, { snprintf(p, sizeof p, "/tmp/alt-ws/d/%ld", j); if (++j == NDISTINCT) j = 0;
                int fd = open(p, O_RDONLY); if (fd < 0) DIE("open ws distinct"); close(fd); });
        } else
        TIME_LOOP(r[1], N, { int fd = open("/tmp/alt-ws/f", O_RDONLY); if (fd < 0) DIE("open ws"); close(fd); });
        TIME_LOOP(r[4], N / 4, {
            int fd = open("/tmp/alt-ws/g", O_CREAT|O_WRONLY|O_TRUNC, 0644); if (fd < 0) DIE("creat");
            if (write(fd, "x", 1) != 1) DIE("write"); close(fd);
            if (rename("/tmp/alt-ws/g", "/tmp/alt-ws/h")) DIE("rename");
            if (unlink("/tmp/alt-ws/h")) DIE("unlink"); });
        for (int i = 0; i < NSB; i++) if (r[i] < best[ph][i]) best[ph][i] = r[i];
        if (write(done_fd, "d", 1) != 1) DIE("done");
    }
    for (int i = 0; i < NSB; i++)
        printf("RESULT %-64s OFF %8.1f  ON %8.1f  delta %+8.1f ns/op\n", sb_names[i], best[0][i], best[1][i], best[1][i] - best[0][i]);
}

static void host_loops(double *r) {
    TIME_LOOP(r[0], N, syscall(SYS_getppid));
    TIME_LOOP(r[1], N, { int fd = open("/tmp/alt-host-f", O_RDONLY); if (fd < 0) DIE("open host"); close(fd); });
    TIME_LOOP(r[2], N, { int fd = open("/dev/null", O_RDONLY); if (fd < 0) DIE("open null"); close(fd); });
    TIME_LOOP(r[3], N, { int fd = open("/dev/shm/alt-host-f", O_RDONLY); if (fd < 0) DIE("open shm"); close(fd); });
}

struct stats { long events, ev_open, ev_cnw, ev_cw, ev_merged, overflow, fds, dirent[5]; uint64_t cpu; };

static void print_event(const struct fanotify_event_metadata *m, int mount_fd) {
    char lnk[64], path[4096] = "";
    if (m->fd >= 0) {
        snprintf(lnk, sizeof lnk, "/proc/self/fd/%d", m->fd);
        ssize_t k = readlink(lnk, path, sizeof path - 1); if (k > 0) path[k] = 0;
        printf("  sample event: mask=0x%llx pid=%d fd=%d -> readlink=%s\n", (unsigned long long)m->mask, m->pid, m->fd, path);
        return;
    }
    printf("  sample event: mask=0x%llx pid=%d fd=%d(FAN_NOFD)", (unsigned long long)m->mask, m->pid, m->fd);
    const char *p = (const char *)(m + 1), *end = (const char *)m + m->event_len;
    while (p < end) {
        const struct fanotify_event_info_header *h = (const void *)p;
        if (h->info_type == FAN_EVENT_INFO_TYPE_FID || h->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME) {
            const struct fanotify_event_info_fid *fid = (const void *)p;
            struct file_handle *fh = (struct file_handle *)fid->handle;
            const char *name = h->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME ? (const char *)fh->f_handle + fh->handle_bytes : NULL;
            char dpath[4096] = "?";
            int o = open_by_handle_at(mount_fd, fh, O_PATH);
            if (o >= 0) { snprintf(lnk, sizeof lnk, "/proc/self/fd/%d", o);
                ssize_t k = readlink(lnk, dpath, sizeof dpath - 1); if (k > 0) dpath[k] = 0; close(o); }
            else snprintf(dpath, sizeof dpath, "(open_by_handle_at failed: %s)", strerror(errno));
            printf(" [%s fsid=%08x%08x handle_type=%d bytes=%u -> %s name=%s]",
                   h->info_type == FAN_EVENT_INFO_TYPE_FID ? "FID" : "DFID_NAME",
                   fid->fsid.val[0], fid->fsid.val[1], fh->handle_type, fh->handle_bytes, dpath, name ? name : "-");
        }
        if (!h->len) break;
        p += h->len;
    }
    printf("\n");
}

static void handle_buf(char *buf, ssize_t n, struct stats *st, int mount_fd) {
    struct fanotify_event_metadata *m = (void *)buf;
    for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
        st->events++;
        if (m->mask & FAN_Q_OVERFLOW) { if (st->overflow++ < 2) printf("  FAN_Q_OVERFLOW received (event #%ld)\n", st->events); continue; }
        int bits = 0;
        if (m->mask & FAN_OPEN) { st->ev_open++; bits++; }
        if (m->mask & FAN_CLOSE_NOWRITE) { st->ev_cnw++; bits++; }
        if (m->mask & FAN_CLOSE_WRITE) { st->ev_cw++; bits++; }
        if (m->mask & FAN_CREATE) { st->dirent[0]++; bits++; }
        if (m->mask & FAN_DELETE) { st->dirent[1]++; bits++; }
        if (m->mask & FAN_MOVED_FROM) { st->dirent[2]++; bits++; }
        if (m->mask & FAN_MOVED_TO) { st->dirent[3]++; bits++; }
        if (m->mask & FAN_MODIFY) { st->dirent[4]++; bits++; }
        if (bits > 1) st->ev_merged++;
        static int printed; if (printed < 8) { printed++; print_event(m, mount_fd); }
        if (m->fd >= 0) {
            st->fds++;
            if (opt_readlink) { char lnk[64], path[4096];
                snprintf(lnk, sizeof lnk, "/proc/self/fd/%d", m->fd);
                if (readlink(lnk, path, sizeof path) < 0) perror("readlink"); }
            close(m->fd);
        }
    }
}

static char buf[1 << 18] __attribute__((aligned(8)));

/* listen until the sandbox writes to done_fd, then drain. CPU accounted to st->cpu. */
static void listen_phase(int fan, int done_fd, struct stats *st, int mount_fd) {
    uint64_t c0 = cpu_ns(), deadline = now_ns() + 600ull * 1000000000ull; char ch; int done = 0;
    while (!done && now_ns() < deadline) {
        struct pollfd p[2] = { { done_fd, POLLIN, 0 }, { fan, POLLIN, 0 } };
        int np = (fan >= 0 && !opt_noread) ? 2 : 1;
        if (poll(p, np, 1000) < 0 && errno != EINTR) DIE("poll");
        if (np == 2 && (p[1].revents & POLLIN)) {
            ssize_t n = read(fan, buf, sizeof buf);
            if (n > 0) handle_buf(buf, n, st, mount_fd); else if (n < 0 && errno != EAGAIN) DIE("read fan");
        }
        if (p[0].revents & (POLLIN | POLLHUP)) { if (read(done_fd, &ch, 1) == 1) done = 1; else { fprintf(stderr, "sandbox died\n"); exit(5); } }
    }
    if (!done) { fprintf(stderr, "phase timed out\n"); exit(4); }
    if (fan >= 0) for (long k = 0; k < 100000000; k++) {
        ssize_t n = read(fan, buf, sizeof buf); if (n <= 0) break; handle_buf(buf, n, st, mount_fd); }
    st->cpu += cpu_ns() - c0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s base|mount|mountfid|fs [N] [unlimited] [readlink] [noread] [pin]\n", argv[0]); return 1; }
    mode = argv[1];
    if (argc > 2) N = atol(argv[2]);
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "unlimited")) opt_unl = 1;
        else if (!strcmp(argv[i], "readlink")) opt_readlink = 1;
        else if (!strcmp(argv[i], "noread")) opt_noread = 1;
        else if (!strcmp(argv[i], "pin")) opt_pin = 1;
        else if (!strcmp(argv[i], "distinct")) opt_distinct = 1;
        else if (!strcmp(argv[i], "big")) ws_size = "size=2g";
        else { fprintf(stderr, "unknown opt %s\n", argv[i]); return 1; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkdir("/tmp/alt-ws", 0755); mkdir("/tmp/alt-other", 0755);
    int hf = open("/tmp/alt-host-f", O_CREAT|O_WRONLY, 0644); if (hf >= 0) close(hf);
    hf = open("/dev/shm/alt-host-f", O_CREAT|O_WRONLY, 0644); if (hf >= 0) close(hf);
    int ready[2], cmd[2], done[2];
    if (pipe(ready) || pipe(cmd) || pipe(done)) DIE("pipe");
    pid_t c = fork();
    if (c < 0) DIE("fork");
    if (c == 0) {
        if (unshare(CLONE_NEWNS | CLONE_NEWPID)) DIE("unshare");
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL)) DIE("make-rprivate");
        if (mount("alt-ws", "/tmp/alt-ws", "tmpfs", 0, ws_size)) DIE("mount ws");
        if (mount("alt-other", "/tmp/alt-other", "tmpfs", 0, "size=16m")) DIE("mount other");
        int f = open("/tmp/alt-ws/f", O_CREAT|O_WRONLY, 0644); close(f);
        f = open("/tmp/alt-other/f", O_CREAT|O_WRONLY, 0644); close(f);
        if (opt_distinct) { mkdir("/tmp/alt-ws/d", 0755); char p[64];
            for (int j = 0; j < NDISTINCT; j++) { snprintf(p, sizeof p, "/tmp/alt-ws/d/%d", j); f = open(p, O_CREAT|O_WRONLY, 0644); if (f < 0) DIE("create %s", p); close(f); } }
        pid_t g = fork();
        if (g == 0) { alarm(1800); sandbox_main(cmd[0], done[1]); _exit(0); }
        if (write(ready[1], "r", 1) != 1) DIE("ready");
        int st; waitpid(g, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 3);
    }
    pin(0);
    close(ready[1]); close(cmd[0]); close(done[1]);   /* so a dead sandbox shows up as EOF/POLLHUP */
    char ch;
    if (read(ready[0], &ch, 1) != 1) DIE("ready read");
    char mp[256]; snprintf(mp, sizeof mp, "/proc/%d/root/tmp/alt-ws", c);
    printf("mode=%s N=%ld rounds=%d distinct=%d unlimited=%d readlink=%d noread=%d pin=%d; sandbox child pid (init ns)=%d, loop runs in its child\n",
           mode, N, R, opt_distinct, opt_unl, opt_readlink, opt_noread, opt_pin, c);
    int fan = -1, mount_fd = -1; uint64_t mask = 0; unsigned mflags = 0;
    if (strcmp(mode, "base")) {
        unsigned init_flags = FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_CLOEXEC;
        if (opt_unl) init_flags |= FAN_UNLIMITED_QUEUE;
        if (!strcmp(mode, "mount")) { mask = FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE; mflags = FAN_MARK_MOUNT; }
        else if (!strcmp(mode, "mountfid")) { init_flags |= FAN_REPORT_FID; mask = FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE; mflags = FAN_MARK_MOUNT; }
        else if (!strcmp(mode, "fs")) { init_flags |= FAN_REPORT_DFID_NAME; mask = FAN_CREATE|FAN_DELETE|FAN_MOVED_FROM|FAN_MOVED_TO|FAN_MODIFY; mflags = FAN_MARK_FILESYSTEM; }
        else { fprintf(stderr, "bad mode\n"); return 1; }
        fan = fanotify_init(init_flags, O_RDONLY | O_CLOEXEC | O_LARGEFILE);
        if (fan < 0) DIE("fanotify_init(0x%x)", init_flags);
        printf("fanotify_init(0x%x) ok\n", init_flags);
        mount_fd = open(mp, O_RDONLY | O_DIRECTORY);
    }
    struct stats st = {0};
    double hbest[2][NH]; for (int p = 0; p < 2; p++) for (int i = 0; i < NH; i++) hbest[p][i] = 1e30;
    for (int round = 0; round < R; round++) {
        for (int ph = 0; ph < 2; ph++) {
            if (fan >= 0) {
                if (fanotify_mark(fan, (ph ? FAN_MARK_ADD : FAN_MARK_REMOVE) | mflags, mask, AT_FDCWD, mp)) {
                    if (!(ph == 0 && errno == ENOENT)) DIE("fanotify_mark(%s flags=0x%x mask=0x%llx, %s)", ph ? "ADD" : "REMOVE", mflags, (unsigned long long)mask, mp);
                } else if (round == 0 && ph) printf("fanotify_mark(ADD|0x%x, mask=0x%llx, %s) ok\n", mflags, (unsigned long long)mask, mp);
            }
            char cch = '0' + ph;
            if (write(cmd[1], &cch, 1) != 1) DIE("cmd");
            listen_phase(ph ? fan : -1, done[0], &st, mount_fd);
            if (fan >= 0 && !ph) { /* nothing should be queued in OFF phase */
                ssize_t n = read(fan, buf, sizeof buf); if (n > 0) printf("  unexpected events in OFF phase\n"); }
            double hr[NH]; host_loops(hr);
            for (int i = 0; i < NH; i++) if (hr[i] < hbest[ph][i]) hbest[ph][i] = hr[i];
        }
    }
    if (write(cmd[1], "x", 1) != 1) DIE("cmd x");
    int ws; waitpid(c, &ws, 0);
    for (int i = 0; i < NH; i++)
        printf("RESULT %-64s OFF %8.1f  ON %8.1f  delta %+8.1f ns/op\n", h_names[i], hbest[0][i], hbest[1][i], hbest[1][i] - hbest[0][i]);
    if (fan >= 0) {
        printf("LISTENER (ON phases, %d rounds) events_read=%ld: open=%ld close_nowrite=%ld close_write=%ld create=%ld delete=%ld moved_from=%ld moved_to=%ld modify=%ld; events with >1 bit (merged)=%ld; FAN_Q_OVERFLOW=%ld; event fds=%ld\n",
               R, st.events, st.ev_open, st.ev_cnw, st.ev_cw, st.dirent[0], st.dirent[1], st.dirent[2], st.dirent[3], st.dirent[4], st.ev_merged, st.overflow, st.fds);
        long exp_oc = (long)R * N, exp_d = (long)R * (N / 4);
        if (mflags == FAN_MARK_MOUNT)
            printf("LISTENER expected unmerged: open=%ld close_nowrite=%ld close_write=%ld (=> %ld events)\n", exp_oc + exp_d, exp_oc, exp_d, 2 * (exp_oc + exp_d));
        else
            printf("LISTENER expected unmerged: create=%ld modify=%ld moved_from=%ld moved_to=%ld delete=%ld (=> %ld events)\n", exp_d, exp_d, exp_d, exp_d, exp_d, 5 * exp_d);
        printf("LISTENER cpu=%.1f ms => %.1f ns listener CPU per event read; %.1f ns per sandbox op on the marked fs (%ld ops)%s\n",
               st.cpu / 1e6, st.events ? (double)st.cpu / st.events : 0.0, (double)st.cpu / (exp_oc + exp_d), exp_oc + exp_d,
               opt_readlink ? " (incl. readlink per event)" : "");
    }
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 3;
}
