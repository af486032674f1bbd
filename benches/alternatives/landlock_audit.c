/* landlock_audit.c — Landlock ABI/flags probe and audit records for denials.
 * usage: ./landlock_audit probe            ABI version + restrict_self flag acceptance, no audit changes
 *        ./landlock_audit bench [N]        denied-open cost with audit untouched (off)
 *        ./landlock_audit live [N] [Naud]  full run: records + cost with audit on. CHANGES HOST AUDIT STATE
 *                                          TEMPORARILY and restores enabled/pid/failure/backlog; see report.
 * Ruleset: handled = READ_FILE|EXECUTE; allowed beneath /usr and /etc/ld.so.cache. Denied target: /etc/hostname.
 */
#include "common.h"
#include "audit_nl.h"
#include <sys/prctl.h>
#include <sys/stat.h>
#include <linux/landlock.h>

#ifndef LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF
#define LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF (1U << 0)
#define LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON (1U << 1)
#define LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF (1U << 2)
#endif
#define CTX_UID 4242   /* tasks forked by this uid keep an audit context (see rule A) */

static long N = 200000, NAUD = 20000;

static int ll_create(struct landlock_ruleset_attr *a) { return syscall(SYS_landlock_create_ruleset, a, a ? sizeof *a : 0, a ? 0 : LANDLOCK_CREATE_RULESET_VERSION); }
static int ll_add_path(int rfd, const char *p, uint64_t acc) {
    struct landlock_path_beneath_attr pb = { .allowed_access = acc };
    pb.parent_fd = open(p, O_PATH | O_CLOEXEC); if (pb.parent_fd < 0) return -1;
    int r = syscall(SYS_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    close(pb.parent_fd); return r;
}
static int ll_ruleset(void) {
    struct landlock_ruleset_attr a = { .handled_access_fs = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_EXECUTE };
    int rfd = ll_create(&a); if (rfd < 0) DIE("landlock_create_ruleset");
    if (ll_add_path(rfd, "/usr", LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_EXECUTE)) DIE("add_rule /usr");
    if (ll_add_path(rfd, "/etc/ld.so.cache", LANDLOCK_ACCESS_FS_READ_FILE)) DIE("add_rule ld.so.cache");
    return rfd;
}
static void ll_restrict(unsigned flags) {
    int rfd = ll_ruleset();
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) DIE("nnp");
    if (syscall(SYS_landlock_restrict_self, rfd, flags)) DIE("landlock_restrict_self(flags=0x%x)", flags);
    close(rfd);
}

/* ---------- probe ---------- */
static void probe(void) {
    FILE *f = fopen("/proc/cmdline", "r"); char cl[4096] = ""; if (f) { if (!fgets(cl, sizeof cl, f)) cl[0] = 0; fclose(f); }
    printf("/proc/cmdline has audit=: %s\n", strstr(cl, "audit=") ? strstr(cl, "audit=") : "no (no audit= parameter)");
    int abi = ll_create(NULL);
    printf("landlock ABI version: %d%s\n", abi, abi < 0 ? strerror(errno) : "");
    unsigned flags[] = { 0, LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF, LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON,
                         LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF, 7, 1u << 3, 1u << 4 };
    const char *names[] = { "0", "LOG_SAME_EXEC_OFF(1)", "LOG_NEW_EXEC_ON(2)", "LOG_SUBDOMAINS_OFF(4)", "all three(7)", "1<<3 (TSYNC in newer kernels)", "1<<4" };
    for (unsigned i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        pid_t c = fork();
        if (c == 0) {
            int rfd = ll_ruleset(); prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            int r = syscall(SYS_landlock_restrict_self, rfd, flags[i]);
            printf("  landlock_restrict_self(ruleset, %-30s) = %d %s\n", names[i], r, r ? strerror(errno) : "OK");
            _exit(0);
        }
        waitpid(c, NULL, 0);
    }
    pid_t c = fork();
    if (c == 0) { prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        int r = syscall(SYS_landlock_restrict_self, -1, LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF);
        printf("  landlock_restrict_self(-1, LOG_SUBDOMAINS_OFF) = %d %s\n", r, r ? strerror(errno) : "OK"); _exit(0); }
    waitpid(c, NULL, 0);
}

/* ---------- targets ---------- */
struct tres { double getppid, allowed_oc, denied; int denied_errno; pid_t pid; };
enum { T_PLAIN = 0, T_RESTRICTED = 1, T_CTXUID = 2, T_QUIET = 4 };

static void target_body(int kind, long n, long nden, int resfd) {
    if (kind & T_RESTRICTED) ll_restrict(0);
    struct tres r = { .pid = getpid() };
    TIME_LOOP(r.getppid, n, syscall(SYS_getppid));
    TIME_LOOP(r.allowed_oc, n, { int fd = open("/usr/lib/os-release", O_RDONLY); if (fd < 0) DIE("open allowed"); close(fd); });
    errno = 0; int fd = open("/etc/hostname", O_RDONLY); r.denied_errno = fd < 0 ? errno : 0; if (fd >= 0) close(fd);
    if (kind & T_RESTRICTED) TIME_LOOP(r.denied, nden, { if (open("/etc/hostname", O_RDONLY) >= 0) DIE("not denied"); });
    else TIME_LOOP(r.denied, nden, { int f2 = open("/etc/hostname", O_RDONLY); if (f2 < 0) DIE("open hostname"); close(f2); });
    if (write(resfd, &r, sizeof r) != sizeof r) DIE("res");
}

struct rstats { long total, ll_access, ll_domain, syscall_, other; uint64_t cpu; };
static struct audit_status saved; static int saved_ok, ctl_fd = -1, ruleA = 0;
static int rec_fd = -1;     /* registered "auditd" socket, or -1 */
static int print_records;   /* print raw text of received records (demo mode) */
static char rbuf[1 << 20] __attribute__((aligned(8)));

static void drain_records(struct rstats *st, int timeout_ms) {
    if (rec_fd < 0) return;
    uint64_t c0 = cpu_ns();
    for (int k = 0; k < 1000000; k++) {
        struct pollfd p = { rec_fd, POLLIN, 0 };
        if (poll(&p, 1, timeout_ms) <= 0) break;
        ssize_t n = recv(rec_fd, rbuf, sizeof rbuf, MSG_DONTWAIT);
        if (n < 0) { if (errno == ENOBUFS) { printf("  (netlink ENOBUFS: records dropped at socket)\n"); continue; } break; }
        for (struct nlmsghdr *nh = (void *)rbuf; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
            st->total++;
            int t = nh->nlmsg_type;
            if (t == AUDIT_LANDLOCK_ACCESS) st->ll_access++; else if (t == AUDIT_LANDLOCK_DOMAIN) st->ll_domain++;
            else if (t == AUDIT_SYSCALL) st->syscall_++; else st->other++;
            /* kauditd sets nlmsg_len to the payload length only (historic quirk), so print nlmsg_len bytes */
            if (print_records) { int l = nh->nlmsg_len; if (l > n - (int)NLMSG_HDRLEN) l = n - NLMSG_HDRLEN;
                printf("  REC type=%d %.*s\n", t, l, (char *)NLMSG_DATA(nh)); }
        }
    }
    st->cpu += cpu_ns() - c0;
}

/* fork a target; collect records while it runs */
static struct tres run_target(int kind, long n, long nden, struct rstats *st, const char *argv_exec[]) {
    int rp[2]; if (pipe(rp)) DIE("pipe");
    pid_t c = fork();
    if (c == 0) {
        close(rp[0]); alarm(300);
        saved_ok = 0; ruleA = 0;   /* never run restore() from a child */
        if (kind & T_CTXUID) {   /* fork again as uid CTX_UID so the grandchild gets an audit context */
            if (setresgid(CTX_UID, CTX_UID, CTX_UID) || setresuid(CTX_UID, CTX_UID, CTX_UID)) DIE("setresuid");
            pid_t g = fork();
            if (g == 0) { if (argv_exec) goto do_exec; target_body(kind, n, nden, rp[1]); _exit(0); }
            int s; waitpid(g, &s, 0); _exit(WIFEXITED(s) ? WEXITSTATUS(s) : 3);
        }
        if (argv_exec) {
        do_exec:
            ll_restrict(kind & T_QUIET ? 0 : LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON);
            struct tres r = { .pid = getpid() };
            if (write(rp[1], &r, sizeof r) != sizeof r) _exit(4);
            execv(argv_exec[0], (char *const *)argv_exec); DIE("execv");
        }
        target_body(kind, n, nden, rp[1]); _exit(0);
    }
    close(rp[1]);
    struct tres r = {0};
    uint64_t deadline = now_ns() + 300ull * 1000000000ull; int got = 0;
    while (!got && now_ns() < deadline) {
        struct pollfd p[2] = { { rp[0], POLLIN, 0 }, { rec_fd, POLLIN, 0 } };
        int np = rec_fd >= 0 ? 2 : 1;
        if (poll(p, np, 1000) < 0 && errno != EINTR) DIE("poll");
        if (np == 2 && (p[1].revents & POLLIN)) drain_records(st, 0);
        if (p[0].revents & (POLLIN | POLLHUP)) { if (read(rp[0], &r, sizeof r) == sizeof r) got = 1; else break; }
    }
    int s; waitpid(c, &s, 0);
    close(rp[0]);
    drain_records(st, 200);
    if (!got && !argv_exec) { fprintf(stderr, "target kind %d produced no result (status %d)\n", kind, s); }
    return r;
}

static long kauditd_ticks(void) {   /* utime+stime of kauditd (clock ticks), -1 if not found */
    for (int pid = 2; pid < 200; pid++) {
        char p[64], b[512]; snprintf(p, sizeof p, "/proc/%d/stat", pid);
        FILE *f = fopen(p, "r"); if (!f) continue;
        size_t k = fread(b, 1, sizeof b - 1, f); fclose(f); b[k] = 0;
        if (!strstr(b, "(kauditd)")) continue;
        char *q = strrchr(b, ')'); long ut = 0, st = 0; int fld = 2;
        for (char *tok = strtok(q + 1, " "); tok; tok = strtok(NULL, " ")) { fld++; if (fld == 14) ut = atol(tok); if (fld == 15) { st = atol(tok); break; } }
        return ut + st;
    }
    return -1;
}
static void bench_block(const char *tag, long n, long nden) {
    long kt0 = kauditd_ticks();
    struct tres best[4]; int kinds[4] = { T_PLAIN, T_RESTRICTED, T_PLAIN | T_CTXUID, T_RESTRICTED | T_CTXUID };
    const char *kn[4] = { "unrestricted, no audit ctx", "landlocked,   no audit ctx", "unrestricted, uid4242 fork", "landlocked,   uid4242 fork" };
    struct rstats st[4]; memset(st, 0, sizeof st);
    struct audit_status s0, s1; int cfd = audit_open();
    for (int k = 0; k < 4; k++) { best[k].getppid = best[k].allowed_oc = best[k].denied = 1e30; }
    if (cfd >= 0) audit_get_status(cfd, &s0);
    for (int round = 0; round < 5; round++)
        for (int k = 0; k < 4; k++) {
            struct tres r = run_target(kinds[k], n, nden, &st[k], NULL);
            if (r.getppid < best[k].getppid) best[k].getppid = r.getppid;
            if (r.allowed_oc < best[k].allowed_oc) best[k].allowed_oc = r.allowed_oc;
            if (r.denied < best[k].denied) best[k].denied = r.denied;
            best[k].denied_errno = r.denied_errno;
        }
    if (cfd >= 0) { audit_get_status(cfd, &s1); close(cfd); }
    for (int k = 0; k < 4; k++) {
        printf("RESULT [%s] %s: getppid %7.1f | open+close /usr/lib/os-release %7.1f | open /etc/hostname %7.1f ns/op (%s, N=%ld)",
               tag, kn[k], best[k].getppid, best[k].allowed_oc, best[k].denied,
               best[k].denied_errno ? strerror(best[k].denied_errno) : "allowed, +close", nden);
        if (rec_fd >= 0 && st[k].total)
            printf(" | records: %ld (landlock_access=%ld domain=%ld syscall=%ld other=%ld), receiver %.0f ns CPU/record",
                   st[k].total, st[k].ll_access, st[k].ll_domain, st[k].syscall_, st[k].other, (double)st[k].cpu / st[k].total);
        printf("\n");
    }
    if (cfd >= 0) printf("  audit lost counter during block: %u -> %u (+%u)\n", s0.lost, s1.lost, s1.lost - s0.lost);
    long kt1 = kauditd_ticks(), tot = 0; for (int k = 0; k < 4; k++) tot += st[k].total;
    printf("  kauditd CPU during block: %ld ticks (%.0f ms)%s\n", kt1 - kt0, (kt1 - kt0) * 1000.0 / sysconf(_SC_CLK_TCK),
           tot ? "" : "");
    if (tot) printf("  => kauditd %.0f ns CPU per record delivered (%ld records)\n", (kt1 - kt0) * 1e9 / sysconf(_SC_CLK_TCK) / tot, tot);
}

/* ---------- live audit ---------- */
static void restore(void) {
    if (!saved_ok) return;
    printf("--- restoring audit state ---\n");
    struct audit_status s; int r;
    if (rec_fd >= 0) { memset(&s, 0, sizeof s); s.mask = AUDIT_STATUS_PID; s.pid = saved.pid;
        r = audit_set_status(rec_fd, &s); printf("AUDIT_SET pid=%u -> %d\n", saved.pid, r); }
    memset(&s, 0, sizeof s);
    s.mask = AUDIT_STATUS_ENABLED | AUDIT_STATUS_FAILURE | AUDIT_STATUS_BACKLOG_LIMIT | AUDIT_STATUS_RATE_LIMIT | AUDIT_STATUS_BACKLOG_WAIT_TIME;
    s.enabled = saved.enabled; s.failure = saved.failure; s.backlog_limit = saved.backlog_limit; s.rate_limit = saved.rate_limit;
    s.backlog_wait_time = saved.backlog_wait_time;
    r = audit_set_status(ctl_fd, &s); printf("AUDIT_SET enabled=%u failure=%u backlog_limit=%u rate_limit=%u backlog_wait_time=%u -> %d\n",
                                             s.enabled, s.failure, s.backlog_limit, s.rate_limit, s.backlog_wait_time, r);
    /* keep a plain never,task rule so that tasks forked from now on get no audit context (audit_ever_enabled is sticky) */
    r = audit_task_rule(ctl_fd, 1, -1); printf("AUDIT_ADD_RULE never,task (no fields) -> %d%s\n", r, r == -EEXIST ? " (already present)" : "");
    if (ruleA) { r = audit_task_rule(ctl_fd, 0, CTX_UID); printf("AUDIT_DEL_RULE never,task uid!=%d -> %d\n", CTX_UID, r); ruleA = 0; }
    if (saved.lost == 0) { memset(&s, 0, sizeof s); s.mask = AUDIT_STATUS_LOST;
        r = audit_set_status(ctl_fd, &s); printf("AUDIT_SET reset lost counter (was 0 before) -> %d\n", r); }
    if (audit_get_status(ctl_fd, &s) == 0) audit_print_status("AUDIT_GET after restore", &s);
    printf("audit rules now: %d\n", audit_list_rules(ctl_fd, 1));
    saved_ok = 0;
}
static void on_sig(int sig) { (void)sig; restore(); _exit(9); }

static void live(void) {
    ctl_fd = audit_open(); if (ctl_fd < 0) DIE("socket(NETLINK_AUDIT)");
    int r = audit_get_status(ctl_fd, &saved);
    if (r) { errno = -r; DIE("AUDIT_GET"); }
    audit_print_status("AUDIT_GET before", &saved);
    int nrules = audit_list_rules(ctl_fd, 1);
    printf("audit rules before: %d\n", nrules);
    if (saved.pid != 0) { printf("an audit daemon is registered (pid %u): NOT taking over; live test skipped\n", saved.pid); return; }
    if (saved.enabled == 2) { printf("audit is locked (enabled=2): skipped\n"); return; }
    saved_ok = 1; atexit(restore);
    signal(SIGINT, on_sig); signal(SIGTERM, on_sig); signal(SIGALRM, on_sig); signal(SIGSEGV, on_sig);
    alarm(1500);
    /* rule A: tasks forked by anyone but uid CTX_UID get no audit context */
    r = audit_task_rule(ctl_fd, 1, CTX_UID); printf("AUDIT_ADD_RULE never,task uid!=%d -> %d\n", CTX_UID, r);
    if (r) { errno = -r; DIE("add rule A"); }
    ruleA = 1;
    /* a plain never,task rule (left by an earlier run) would shadow rule A: remove it while A is in place */
    r = audit_task_rule(ctl_fd, 0, -1); printf("AUDIT_DEL_RULE never,task (no fields) -> %d%s\n", r, r == -ENOENT ? " (none present)" : "");
    rec_fd = audit_open(); if (rec_fd < 0) DIE("rec socket");
    int sz = 16 << 20; setsockopt(rec_fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz);
    struct audit_status s; memset(&s, 0, sizeof s);
    s.mask = AUDIT_STATUS_PID; s.pid = getpid();
    r = audit_set_status(rec_fd, &s); printf("AUDIT_SET pid=%d (become audit daemon) -> %d\n", getpid(), r);
    if (r) { errno = -r; rec_fd = -1; DIE("set pid"); }
    memset(&s, 0, sizeof s); s.mask = AUDIT_STATUS_ENABLED; s.enabled = 1;
    r = audit_set_status(ctl_fd, &s); printf("AUDIT_SET enabled=1 -> %d\n", r);
    if (r) { errno = -r; DIE("enable"); }
    struct rstats st; memset(&st, 0, sizeof st);
    print_records = 1;
    drain_records(&st, 200);
    printf("=== demo 1: landlocked child (no audit context), one denied open(/etc/hostname) ===\n");
    struct tres t = run_target(T_RESTRICTED, 1, 1, &st, NULL);
    printf("  (target pid %d, errno %s)\n", t.pid, strerror(t.denied_errno));
    printf("=== demo 2: landlocked child WITH audit context (uid %d), one denied open ===\n", CTX_UID);
    t = run_target(T_RESTRICTED | T_CTXUID, 1, 1, &st, NULL);
    printf("  (target pid %d, errno %s)\n", t.pid, strerror(t.denied_errno));
    const char *cat[] = { "/usr/bin/cat", "/etc/hostname", NULL };
    printf("=== demo 3: restrict_self(flags=0) then execve(cat /etc/hostname): denial in the exec'd program ===\n");
    t = run_target(T_QUIET, 1, 1, &st, cat);
    printf("  (target pid %d)\n", t.pid);
    printf("=== demo 4: restrict_self(LOG_NEW_EXEC_ON) then execve(cat /etc/hostname) ===\n");
    t = run_target(0, 1, 1, &st, cat);
    printf("  (target pid %d)\n", t.pid);
    print_records = 0;
    drain_records(&st, 300);
    printf("=== bench with audit ENABLED and this process as audit daemon ===\n");
    bench_block("audit on ", NAUD, NAUD);
    memset(&s, 0, sizeof s); s.mask = AUDIT_STATUS_ENABLED; s.enabled = 0;
    r = audit_set_status(ctl_fd, &s); printf("AUDIT_SET enabled=0 -> %d\n", r);
    drain_records(&st, 200);
    printf("=== bench with audit DISABLED again (audit_ever_enabled now 1; ctx tasks still carry SYSCALL_WORK_SYSCALL_AUDIT) ===\n");
    bench_block("audit off, after", N, N);
    restore();
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) { fprintf(stderr, "usage: %s probe|bench [N]|live [N] [Naud]\n", argv[0]); return 1; }
    if (argc > 2) N = atol(argv[2]);
    if (argc > 3) NAUD = atol(argv[3]);
    if (!strcmp(argv[1], "probe")) probe();
    else if (!strcmp(argv[1], "bench")) { printf("=== bench, audit untouched ===\n"); bench_block("audit as found", N, N); }
    else if (!strcmp(argv[1], "live")) live();
    return 0;
}
