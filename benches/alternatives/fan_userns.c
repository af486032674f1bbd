/* fan_userns.c — what fanotify allows from inside a user namespace (no init-ns CAP_SYS_ADMIN).
 * Child: unshare(CLONE_NEWUSER) (maps its own uid 0 -> 0), unshare(CLONE_NEWNS), mounts its own tmpfs on
 * /tmp/alt-uns, then tries fanotify_init/fanotify_mark variants and prints errno.
 * Also (first, as init-ns root in a private mount ns): which event types FAN_MARK_MOUNT / FAN_MARK_FILESYSTEM accept.
 * usage: ./fan_userns
 */
#include "common.h"
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/fanotify.h>
#ifndef FAN_REPORT_DFID_NAME
#define FAN_REPORT_DFID_NAME (0x00000c00)
#endif

static void wr(const char *p, const char *s) { int fd = open(p, O_WRONLY); if (fd < 0 || write(fd, s, strlen(s)) < 0) DIE("write %s", p); close(fd); }
static int try_init(const char *tag, unsigned fl) {
    int fd = fanotify_init(fl, O_RDONLY);
    printf("  fanotify_init(%-40s) = %d %s\n", tag, fd, fd < 0 ? strerror(errno) : "OK");
    return fd;
}
static void try_mark(int fd, const char *tag, unsigned fl, uint64_t mask, const char *path) {
    if (fd < 0) { printf("  fanotify_mark(%s): skipped (no group)\n", tag); return; }
    int r = fanotify_mark(fd, FAN_MARK_ADD | fl, mask, AT_FDCWD, path);
    printf("  fanotify_mark(%-40s, %s) = %d %s\n", tag, path, r, r ? strerror(errno) : "OK");
}
static void count_events(int fd, const char *tag) {
    if (fd < 0) return;
    char buf[8192] __attribute__((aligned(8))); ssize_t n = read(fd, buf, sizeof buf); int k = 0;
    struct fanotify_event_metadata *m = (void *)buf;
    for (; n > 0 && FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) { k++; if (k <= 3) printf("    %s event mask=0x%llx pid=%d fd=%d\n", tag, (unsigned long long)m->mask, m->pid, m->fd); if (m->fd >= 0) close(m->fd); }
    printf("    %s: %d events read\n", tag, k);
}

/* init-ns (CAP_SYS_ADMIN) checks on a private tmpfs: which event types a mount mark accepts */
static void initns_checks(void) {
    pid_t c = fork();
    if (c == 0) {
        if (unshare(CLONE_NEWNS)) DIE("unshare(NEWNS)");
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL)) DIE("rprivate");
        if (mount("alt-uns", "/tmp/alt-uns", "tmpfs", 0, "size=4m")) DIE("mount tmpfs");
        printf("init user ns (root, CAP_SYS_ADMIN), private tmpfs on /tmp/alt-uns:\n");
        int g = try_init("FAN_CLASS_NOTIF|FAN_REPORT_DFID_NAME", FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME);
        try_mark(g, "FAN_MARK_MOUNT create|delete|moved", FAN_MARK_MOUNT, FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO, "/tmp/alt-uns");
        try_mark(g, "FAN_MARK_MOUNT modify|attrib", FAN_MARK_MOUNT, FAN_MODIFY | FAN_ATTRIB, "/tmp/alt-uns");
        try_mark(g, "FAN_MARK_FILESYSTEM create|delete|moved|attrib", FAN_MARK_FILESYSTEM, FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_ATTRIB, "/tmp/alt-uns");
        int g2 = try_init("FAN_CLASS_NOTIF (fd mode)", FAN_CLASS_NOTIF);
        try_mark(g2, "FAN_MARK_MOUNT create (fd mode)", FAN_MARK_MOUNT, FAN_CREATE, "/tmp/alt-uns");
        try_mark(g2, "FAN_MARK_MOUNT open_exec|access|modify", FAN_MARK_MOUNT, FAN_OPEN_EXEC | FAN_ACCESS | FAN_MODIFY, "/tmp/alt-uns");
        _exit(0);
    }
    waitpid(c, NULL, 0);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    mkdir("/tmp/alt-uns", 0755);
    initns_checks();
    pid_t c = fork();
    if (c == 0) {
        if (unshare(CLONE_NEWUSER)) DIE("unshare(NEWUSER)");
        wr("/proc/self/setgroups", "deny"); wr("/proc/self/uid_map", "0 0 1"); wr("/proc/self/gid_map", "0 0 1");
        if (unshare(CLONE_NEWNS)) DIE("unshare(NEWNS)");
        if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL)) DIE("rprivate");
        if (mount("alt-uns", "/tmp/alt-uns", "tmpfs", 0, "size=4m")) DIE("mount tmpfs in userns");
        int f = open("/tmp/alt-uns/x", O_CREAT | O_WRONLY, 0644); close(f);
        printf("in user+mount ns (uid 0 mapped to 0, no init-ns caps), own tmpfs on /tmp/alt-uns:\n");
        int g1 = try_init("FAN_CLASS_NOTIF (fd events)", FAN_CLASS_NOTIF | FAN_NONBLOCK);
        try_mark(g1, "FAN_MARK_MOUNT", FAN_MARK_MOUNT, FAN_OPEN | FAN_CLOSE, "/tmp/alt-uns");
        try_init("FAN_CLASS_NOTIF|FAN_UNLIMITED_QUEUE|FAN_REPORT_FID", FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_UNLIMITED_QUEUE);
        try_init("FAN_CLASS_CONTENT|FAN_REPORT_FID (perm)", FAN_CLASS_CONTENT | FAN_REPORT_FID);
        int g2 = try_init("FAN_CLASS_NOTIF|FAN_REPORT_FID", FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_NONBLOCK);
        try_mark(g2, "FAN_MARK_INODE open|close", 0, FAN_OPEN | FAN_CLOSE, "/tmp/alt-uns/x");
        try_mark(g2, "FAN_MARK_MOUNT open|close", FAN_MARK_MOUNT, FAN_OPEN | FAN_CLOSE, "/tmp/alt-uns");
        try_mark(g2, "FAN_MARK_FILESYSTEM open|close", FAN_MARK_FILESYSTEM, FAN_OPEN | FAN_CLOSE, "/tmp/alt-uns");
        int g3 = try_init("FAN_CLASS_NOTIF|FAN_REPORT_DFID_NAME", FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK);
        try_mark(g3, "FAN_MARK_FILESYSTEM create|delete|moved|modify", FAN_MARK_FILESYSTEM,
                 FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_MODIFY, "/tmp/alt-uns");
        try_mark(g3, "FAN_MARK_INODE(dir) create|delete|moved", 0, FAN_CREATE | FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_EVENT_ON_CHILD | FAN_MODIFY, "/tmp/alt-uns");
        try_mark(g2, "FAN_MARK_INODE on host /etc/hostname", 0, FAN_OPEN, "/etc/hostname");
        f = open("/tmp/alt-uns/x", O_RDONLY); close(f);
        f = open("/tmp/alt-uns/y", O_CREAT | O_WRONLY, 0644); if (write(f, "a", 1) < 0) {} close(f); unlink("/tmp/alt-uns/y");
        count_events(g1, "group1(fd)"); count_events(g2, "group2(FID)"); count_events(g3, "group3(DFID_NAME)");
        _exit(0);
    }
    int s; waitpid(c, &s, 0);
    return 0;
}
