/* minimal NETLINK_AUDIT helpers */
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/audit.h>
#include <poll.h>

#ifndef AUDIT_LANDLOCK_ACCESS
#define AUDIT_LANDLOCK_ACCESS 1423
#endif
#ifndef AUDIT_LANDLOCK_DOMAIN
#define AUDIT_LANDLOCK_DOMAIN 1424
#endif

static int audit_open(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_AUDIT);
    if (fd < 0) return -1;
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa)) { close(fd); return -1; }
    return fd;
}
static int audit_send(int fd, int type, const void *data, size_t len, int seq) {
    char buf[NLMSG_SPACE(8192)] __attribute__((aligned(8)));
    memset(buf, 0, sizeof buf);
    struct nlmsghdr *nh = (void *)buf;
    nh->nlmsg_len = NLMSG_LENGTH(len); nh->nlmsg_type = type;
    nh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK; nh->nlmsg_seq = seq;
    if (len) memcpy(NLMSG_DATA(nh), data, len);
    struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
    return sendto(fd, buf, nh->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0 ? -1 : 0;
}
/* wait for the ACK (NLMSG_ERROR) of seq; optionally capture a reply of type want into out. returns -errno or 0 */
static int audit_wait_ack(int fd, int seq, int want, void *out, size_t outlen) {
    char buf[65536] __attribute__((aligned(8)));
    uint64_t deadline = now_ns() + 3000000000ull;
    while (now_ns() < deadline) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 500) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) { if (errno == EINTR || errno == ENOBUFS) continue; return -errno; }
        for (struct nlmsghdr *nh = (void *)buf; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
            if ((int)nh->nlmsg_seq != seq) continue;
            /* note: the AUDIT_GET reply is sent asynchronously and may arrive after the ACK */
            if (nh->nlmsg_type == NLMSG_ERROR) { struct nlmsgerr *e = NLMSG_DATA(nh); if (e->error || !want) return e->error; continue; }
            if (want && nh->nlmsg_type == want && out) {
                size_t l = nh->nlmsg_len - NLMSG_HDRLEN; memset(out, 0, outlen);
                memcpy(out, NLMSG_DATA(nh), l < outlen ? l : outlen);
                return 0;
            }
        }
    }
    return -ETIMEDOUT;
}
static int audit_get_status(int fd, struct audit_status *s) {
    static int seq = 100;
    int q = ++seq;
    if (audit_send(fd, AUDIT_GET, NULL, 0, q)) return -errno;
    return audit_wait_ack(fd, q, AUDIT_GET, s, sizeof *s);
}
static int audit_set_status(int fd, const struct audit_status *s) {
    static int seq = 5000;
    int q = ++seq;
    if (audit_send(fd, AUDIT_SET, s, sizeof *s, q)) return -errno;
    return audit_wait_ack(fd, q, 0, NULL, 0);
}
static void audit_print_status(const char *tag, const struct audit_status *s) {
    printf("%s: enabled=%u failure=%u pid=%u rate_limit=%u backlog_limit=%u lost=%u backlog=%u feature_bitmap=0x%x backlog_wait_time=%u\n",
           tag, s->enabled, s->failure, s->pid, s->rate_limit, s->backlog_limit, s->lost, s->backlog, s->feature_bitmap, s->backlog_wait_time);
}
/* task-filter rule; field_uid_ne < 0 => no fields (plain "never,task") */
static int audit_task_rule(int fd, int add, long field_uid_ne) {
    static int seq = 9000;
    struct audit_rule_data r; memset(&r, 0, sizeof r);
    r.flags = AUDIT_FILTER_TASK; r.action = AUDIT_NEVER;
    for (int i = 0; i < AUDIT_BITMASK_SIZE; i++) r.mask[i] = ~0u;
    if (field_uid_ne >= 0) { r.field_count = 1; r.fields[0] = AUDIT_UID; r.values[0] = field_uid_ne; r.fieldflags[0] = AUDIT_NOT_EQUAL; }
    int q = ++seq;
    if (audit_send(fd, add ? AUDIT_ADD_RULE : AUDIT_DEL_RULE, &r, sizeof r, q)) return -errno;
    return audit_wait_ack(fd, q, 0, NULL, 0);
}
/* list rules, print a one-line summary each; returns count or -errno */
static int audit_list_rules(int fd, int verbose) {
    static int seq = 12000;
    int q = ++seq, count = 0;
    if (audit_send(fd, AUDIT_LIST_RULES, NULL, 0, q)) return -errno;
    char buf[65536] __attribute__((aligned(8)));
    uint64_t deadline = now_ns() + 3000000000ull;
    while (now_ns() < deadline) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 500) <= 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) return -errno;
        for (struct nlmsghdr *nh = (void *)buf; NLMSG_OK(nh, n); nh = NLMSG_NEXT(nh, n)) {
            if ((int)nh->nlmsg_seq != q) continue;
            if (nh->nlmsg_type == NLMSG_DONE) return count;
            if (nh->nlmsg_type == NLMSG_ERROR) { struct nlmsgerr *e = NLMSG_DATA(nh); if (e->error) return e->error; continue; }
            if (nh->nlmsg_type == AUDIT_LIST_RULES) {
                struct audit_rule_data *r = NLMSG_DATA(nh);
                count++;
                if (verbose) {
                    printf("  rule: list=%u action=%u fields=%u", r->flags, r->action, r->field_count);
                    for (unsigned i = 0; i < r->field_count && i < AUDIT_MAX_FIELDS; i++) printf(" [f=%u op=0x%x v=%u]", r->fields[i], r->fieldflags[i], r->values[i]);
                    printf("\n");
                }
            }
        }
    }
    return -ETIMEDOUT;
}
