/* snotif.c — seccomp user notification vs SECCOMP_RET_ERRNO for a denied syscall.
 * usage: ./snotif [N] [pin|samecpu]   (pin: target CPU1, supervisor CPU0; samecpu: both on CPU0)
 * Per round (5 rounds, best-of reported), one fresh target process per variant:
 *   none       no seccomp filter
 *   errno      filter: mknodat -> SECCOMP_RET_ERRNO(EPERM), everything else ALLOW
 *   notif      filter: mknodat -> SECCOMP_RET_USER_NOTIF, supervisor process answers error=-EPERM
 *   notif-sync same + SECCOMP_IOCTL_NOTIF_SET_FLAGS(SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
 * Target runs in a new pid namespace (it is pid 1 there), supervisor in init ns.
 * Loops: getppid() (allowed, not matched), mknodat(AT_FDCWD,"/nonexistent-alt/x",S_IFIFO|0600,0) (the "denied" call;
 * without a filter it fails with ENOENT).
 */
#include "common.h"
#include <poll.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#ifndef SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP
#define SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (1UL << 0)
#endif

static long N = 200000;
static int opt_pin, opt_same;
#define R 5
enum { V_NONE, V_ERRNO, V_NOTIF, V_NOTIF_SYNC, NV };
static const char *vname[NV] = { "none", "errno", "notif", "notif-sync" };

static void pin(int cpu) { if (!opt_pin) return; cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s); sched_setaffinity(0, sizeof s, &s); }

static int install(int v) {
    unsigned ret = v == V_ERRNO ? (SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)) : SECCOMP_RET_USER_NOTIF;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mknodat, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, ret),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { sizeof f / sizeof f[0], f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) DIE("nnp");
    int fl = (v == V_ERRNO) ? 0 : SECCOMP_FILTER_FLAG_NEW_LISTENER;
    int r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, fl, &prog);
    if (r < 0) DIE("seccomp(SET_MODE_FILTER, flags=%d)", fl);
    return r; /* listener fd for notif */
}

static void send_fd(int sock, int fd) {
    char c = 'f'; struct iovec io = { &c, 1 };
    union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr a; } u;
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    if (sendmsg(sock, &m, 0) != 1) DIE("sendmsg");
}
static int recv_fd(int sock) {
    char c; struct iovec io = { &c, 1 };
    union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr a; } u;
    struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof u.b };
    if (recvmsg(sock, &m, 0) != 1) DIE("recvmsg");
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    if (!cm || cm->cmsg_type != SCM_RIGHTS) { fprintf(stderr, "no fd\n"); exit(2); }
    int fd; memcpy(&fd, CMSG_DATA(cm), sizeof fd); return fd;
}

/* result slots passed back through a pipe */
struct res { double getppid, denied; int denied_errno; pid_t inner_pid; };

static void target(int v, int sock, int resfd) {
    pin(opt_same ? 0 : 1);
    int lfd = -1;
    if (v != V_NONE) lfd = install(v);
    if (v >= V_NOTIF) { send_fd(sock, lfd); close(lfd); char c; if (read(sock, &c, 1) != 1) DIE("sup ready"); }
    struct res r = { .inner_pid = getpid() };
    errno = 0;
    int rc = mknodat(AT_FDCWD, "/nonexistent-alt/x", S_IFIFO | 0600, 0);
    r.denied_errno = rc < 0 ? errno : 0;
    TIME_LOOP(r.getppid, N, syscall(SYS_getppid));
    TIME_LOOP(r.denied, N, mknodat(AT_FDCWD, "/nonexistent-alt/x", S_IFIFO | 0600, 0));
    if (write(resfd, &r, sizeof r) != sizeof r) DIE("res");
}

static void supervisor(int lfd, int v, long *count, uint64_t *cpu, int show) {
    if (v == V_NOTIF_SYNC && ioctl(lfd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 0))
        DIE("SECCOMP_IOCTL_NOTIF_SET_FLAGS(FD_SYNC_WAKE_UP)");
    struct seccomp_notif_sizes sz;
    if (syscall(SYS_seccomp, SECCOMP_GET_NOTIF_SIZES, 0, &sz)) DIE("GET_NOTIF_SIZES");
    struct seccomp_notif *req = calloc(1, sz.seccomp_notif > sizeof *req ? sz.seccomp_notif : sizeof *req);
    struct seccomp_notif_resp *resp = calloc(1, sz.seccomp_notif_resp > sizeof *resp ? sz.seccomp_notif_resp : sizeof *resp);
    uint64_t c0 = cpu_ns(), deadline = now_ns() + 300ull * 1000000000ull;
    while (now_ns() < deadline) {
        struct pollfd p = { lfd, POLLIN, 0 };
        int pr = poll(&p, 1, 1000);
        if (pr < 0 && errno != EINTR) DIE("poll");
        if (p.revents & POLLIN) {
            memset(req, 0, sz.seccomp_notif);
            if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_RECV, req)) { if (errno == EINTR || errno == ENOENT) continue; DIE("NOTIF_RECV"); }
            if (show && *count == 0) {
                char path[256] = "?", mem[64];
                snprintf(mem, sizeof mem, "/proc/%d/mem", req->pid);
                int mfd = open(mem, O_RDONLY);
                if (mfd >= 0) { ssize_t k = pread(mfd, path, sizeof path - 1, (off_t)req->data.args[1]); if (k > 0) path[k] = 0; else strcpy(path, "(pread failed)"); close(mfd); }
                int valid = ioctl(lfd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) == 0;
                printf("  sample notification: id=%llu pid=%u flags=%u data.nr=%d (mknodat=%d) arch=0x%x ip=0x%llx args=[%#llx %#llx %#llo %#llx %#llx %#llx]\n"
                       "    args[1] read from /proc/%u/mem = \"%s\"  ID_VALID=%d\n",
                       (unsigned long long)req->id, req->pid, req->flags, req->data.nr, __NR_mknodat, req->data.arch,
                       (unsigned long long)req->data.instruction_pointer,
                       (unsigned long long)req->data.args[0], (unsigned long long)req->data.args[1], (unsigned long long)req->data.args[2],
                       (unsigned long long)req->data.args[3], (unsigned long long)req->data.args[4], (unsigned long long)req->data.args[5],
                       req->pid, path, valid);
            }
            memset(resp, 0, sz.seccomp_notif_resp);
            resp->id = req->id; resp->error = -EPERM; resp->val = 0; resp->flags = 0;
            if (ioctl(lfd, SECCOMP_IOCTL_NOTIF_SEND, resp) && errno != ENOENT) DIE("NOTIF_SEND");
            (*count)++;
        } else if (p.revents & (POLLHUP | POLLERR)) break;   /* target gone */
    }
    *cpu = cpu_ns() - c0;
}

static void run_variant(int v, struct res *out, long *ncount, uint64_t *ncpu, int show) {
    int sv[2], rp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(rp)) DIE("socketpair/pipe");
    pid_t c = fork();
    if (c < 0) DIE("fork");
    if (c == 0) {  /* child: new pidns, its child is the target (pid 1 inside) */
        if (unshare(CLONE_NEWPID)) DIE("unshare(NEWPID)");
        pid_t t = fork();
        if (t == 0) { alarm(600); target(v, sv[1], rp[1]); _exit(0); }
        int st; waitpid(t, &st, 0); _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 3);
    }
    close(sv[1]); close(rp[1]);
    *ncount = 0; *ncpu = 0;
    if (v >= V_NOTIF) {
        pin(0);
        int lfd = recv_fd(sv[0]);
        if (write(sv[0], "g", 1) != 1) DIE("go");
        supervisor(lfd, v, ncount, ncpu, show);
        close(lfd);
    }
    if (read(rp[0], out, sizeof *out) != sizeof *out) DIE("read res (variant %s)", vname[v]);
    int st; waitpid(c, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) { fprintf(stderr, "variant %s child failed status=%d\n", vname[v], st); exit(3); }
    close(sv[0]); close(rp[0]);
}

int main(int argc, char **argv) {
    if (argc > 1) N = atol(argv[1]);
    if (argc > 2 && !strcmp(argv[2], "pin")) opt_pin = 1;
    if (argc > 2 && !strcmp(argv[2], "samecpu")) opt_pin = opt_same = 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("snotif N=%ld rounds=%d pin=%d samecpu=%d\n", N, R, opt_pin, opt_same);
    double bg[NV], bd[NV]; long cnt[NV] = {0}; uint64_t cpu[NV] = {0};
    for (int v = 0; v < NV; v++) bg[v] = bd[v] = 1e30;
    for (int round = 0; round < R; round++)
        for (int v = 0; v < NV; v++) {
            struct res r; long n; uint64_t c;
            run_variant(v, &r, &n, &c, round == 0 && v == V_NOTIF);
            if (round == 0) printf("  variant %-10s: first mknodat -> errno %d (%s); target getpid() in its pidns = %d\n",
                                   vname[v], r.denied_errno, strerror(r.denied_errno), r.inner_pid);
            if (r.getppid < bg[v]) bg[v] = r.getppid;
            if (r.denied < bd[v]) bd[v] = r.denied;
            cnt[v] += n; cpu[v] += c;
        }
    for (int v = 0; v < NV; v++) {
        printf("RESULT %-10s getppid %8.1f ns/op (delta vs none %+7.1f)   mknodat %9.1f ns/op (delta vs none %+8.1f)",
               vname[v], bg[v], bg[v] - bg[V_NONE], bd[v], bd[v] - bd[V_NONE]);
        if (cnt[v]) printf("   supervisor: %ld notifs, %.1f ns CPU/notif", cnt[v], (double)cpu[v] / cnt[v]);
        printf("\n");
    }
    return 0;
}
