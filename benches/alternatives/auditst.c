/* auditst — print audit status and rules; optionally restore fields.
 * ./auditst                      print AUDIT_GET + rule list
 * ./auditst set-enabled V        AUDIT_SET enabled=V (0/1)
 * ./auditst del-never-task       delete a plain "never,task" rule
 * ./auditst add-never-task       add a plain "never,task" rule
 * ./auditst reset-lost           reset the kernel's audit "lost" counter to 0
 */
#include "common.h"
#include "audit_nl.h"
int main(int argc, char **argv) {
    int fd = audit_open(); if (fd < 0) DIE("socket(NETLINK_AUDIT)");
    struct audit_status s;
    if (argc > 2 && !strcmp(argv[1], "set-enabled")) {
        memset(&s, 0, sizeof s); s.mask = AUDIT_STATUS_ENABLED; s.enabled = atoi(argv[2]);
        int r = audit_set_status(fd, &s); printf("AUDIT_SET enabled=%u -> %d\n", s.enabled, r);
    } else if (argc > 1 && !strcmp(argv[1], "del-never-task")) printf("del never,task -> %d\n", audit_task_rule(fd, 0, -1));
    else if (argc > 1 && !strcmp(argv[1], "add-never-task")) printf("add never,task -> %d\n", audit_task_rule(fd, 1, -1));
    else if (argc > 1 && !strcmp(argv[1], "reset-lost")) { memset(&s, 0, sizeof s); s.mask = AUDIT_STATUS_LOST;
        printf("AUDIT_SET reset lost counter -> %d\n", audit_set_status(fd, &s)); }
    int r = audit_get_status(fd, &s);
    if (r) { errno = -r; DIE("AUDIT_GET"); }
    audit_print_status("AUDIT_GET", &s);
    int n = audit_list_rules(fd, 1);
    printf("audit rules: %d\n", n);
    return 0;
}
