//! The seccomp baseline: every syscall the agent may not make, each with the reason.
//! The filter's default action is allow; non-native ABIs (i386 `int 0x80`, x32) kill the
//! process (see `launch::seccomp`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    Errno(i32),
    KillProcess,
}

/// When a rule applies, as a test on one integer argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum When {
    Always,
    /// `(arg[index] & mask) == value`
    ArgMasked {
        index: u32,
        mask: u64,
        value: u64,
    },
    /// Both masked tests `(arg[index] & mask) == value` hold.
    Both([(u32, u64, u64); 2]),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    pub when: When,
    pub reason: String,
}

const EPERM: Action = Action::Errno(libc::EPERM);

/// (syscalls, reason) denied with EPERM whatever their arguments.
const DENY: &[(&[&str], &str)] = &[
    (
        &["ptrace"],
        "reads and rewrites other processes' memory and registers",
    ),
    (
        &["process_vm_readv", "process_vm_writev"],
        "reads or writes another process's memory",
    ),
    (
        &["kcmp", "pidfd_getfd"],
        "inspects or steals other processes' file descriptors",
    ),
    (&["bpf"], "loads kernel programs and reads kernel maps"),
    (
        &["perf_event_open"],
        "kernel profiling: side channels and a long record of kernel bugs",
    ),
    (
        &["keyctl", "add_key", "request_key"],
        "kernel keyrings are not namespaced",
    ),
    (
        &["userfaultfd"],
        "stalls kernel copies at will: a classic exploitation primitive",
    ),
    (
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        "io_uring performs I/O that seccomp never sees",
    ),
    (
        &[
            "mount",
            "umount2",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "pivot_root",
            "chroot",
        ],
        "changing the mount table could uncover hidden paths",
    ),
    (
        &["unshare", "setns"],
        "new or foreign namespaces reopen the kernel attack surface the sandbox closed",
    ),
    (
        &["kexec_load", "kexec_file_load", "reboot"],
        "replaces or stops the running kernel",
    ),
    (
        &["init_module", "finit_module", "delete_module"],
        "loads code into the kernel",
    ),
    (
        &["open_by_handle_at", "name_to_handle_at"],
        "opens files by handle, bypassing the mount view (the 'shocker' escape)",
    ),
    (
        &[
            "acct",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "syslog",
            "vhangup",
        ],
        "host-wide administration",
    ),
    (
        &["settimeofday", "clock_settime", "clock_adjtime", "adjtimex"],
        "sets the host clock",
    ),
    (&["iopl", "ioperm"], "raw hardware I/O ports"),
    (
        &["uselib", "lookup_dcookie", "nfsservctl"],
        "obsolete interfaces with a history of bugs",
    ),
    (
        &["fanotify_init"],
        "watches filesystem activity outside the sandbox",
    ),
    (
        &["open_tree_attr"],
        "changing the mount table could uncover hidden paths",
    ),
];

const S_ISUID: u64 = 0o4000;
const S_ISGID: u64 = 0o2000;

/// Syscalls that set a file mode, and which argument carries it. Files the agent creates in
/// the workspace belong to the invoking user on the host (root, when root runs cordon): a
/// setuid or setgid bit there would be a privilege escalation for anyone on the host.
const MODE_ARGS: &[(&str, u32)] = &[
    ("chmod", 1),
    ("fchmod", 1),
    ("fchmodat", 2),
    ("fchmodat2", 2),
    ("creat", 1),
    ("mkdir", 1),
    ("mkdirat", 2),
    ("mknod", 1),
    ("mknodat", 2),
];

/// open/openat only look at the mode when creating (O_CREAT or O_TMPFILE).
const OPEN_MODE_ARGS: &[(&str, u32, u32)] = &[("open", 1, 2), ("openat", 2, 3)];
const O_TMPFILE_BIT: u64 = 0o20_000_000;

/// Namespace flags that `clone` may not carry: the sandbox's namespaces are final.
const CLONE_NS_FLAGS: &[(u64, &str)] = &[
    (libc::CLONE_NEWUSER as u64, "CLONE_NEWUSER"),
    (libc::CLONE_NEWNS as u64, "CLONE_NEWNS"),
    (libc::CLONE_NEWPID as u64, "CLONE_NEWPID"),
    (libc::CLONE_NEWNET as u64, "CLONE_NEWNET"),
    (libc::CLONE_NEWIPC as u64, "CLONE_NEWIPC"),
    (libc::CLONE_NEWUTS as u64, "CLONE_NEWUTS"),
    (libc::CLONE_NEWCGROUP as u64, "CLONE_NEWCGROUP"),
    (libc::CLONE_NEWTIME as u64, "CLONE_NEWTIME"),
];

const PERSONALITY_QUERY_BIT: u64 = 0x8000_0000;

/// personality(2) flags that weaken memory protections.
const PERSONALITY_FLAGS: &[(u64, &str)] = &[
    (0x0040000, "ADDR_NO_RANDOMIZE disables ASLR"),
    (
        0x0100000,
        "MMAP_PAGE_ZERO maps page zero (NULL-dereference exploits)",
    ),
    (0x0200000, "ADDR_COMPAT_LAYOUT weakens the address-space layout"),
    (
        0x0400000,
        "READ_IMPLIES_EXEC makes every readable mapping executable",
    ),
    (0x0800000, "ADDR_LIMIT_32BIT changes the address-space layout"),
    (0x8000000, "ADDR_LIMIT_3GB changes the address-space layout"),
];

pub fn baseline() -> Vec<Rule> {
    let mut rules = Vec::new();
    for (names, reason) in DENY {
        for name in *names {
            rules.push(Rule {
                name: (*name).into(),
                action: EPERM,
                when: When::Always,
                reason: (*reason).into(),
            });
        }
    }
    rules.push(Rule {
        name: "clone3".into(),
        action: Action::Errno(libc::ENOSYS),
        when: When::Always,
        reason: "its flags sit behind a pointer BPF cannot read; ENOSYS makes libc fall back to clone".into(),
    });
    for (flag, flag_name) in CLONE_NS_FLAGS {
        rules.push(Rule {
            name: "clone".into(),
            action: EPERM,
            // x86_64 clone(flags, ...): flags is argument 0.
            when: When::ArgMasked {
                index: 0,
                mask: *flag,
                value: *flag,
            },
            reason: format!("{flag_name}: no new namespaces inside the sandbox"),
        });
    }
    for (flag, why) in PERSONALITY_FLAGS {
        rules.push(Rule {
            name: "personality".into(),
            action: EPERM,
            // Bit 31 is no personality flag; it is set only in the query form 0xffffffff,
            // which must keep working.
            when: When::ArgMasked {
                index: 0,
                mask: *flag | PERSONALITY_QUERY_BIT,
                value: *flag,
            },
            reason: why.to_string(),
        });
    }
    for (name, index) in MODE_ARGS {
        for bit in [S_ISUID, S_ISGID] {
            rules.push(Rule {
                name: (*name).into(),
                action: EPERM,
                when: When::ArgMasked {
                    index: *index,
                    mask: bit,
                    value: bit,
                },
                reason: "no setuid/setgid files: the workspace belongs to the invoking user on the host"
                    .into(),
            });
        }
    }
    for (name, flags_index, mode_index) in OPEN_MODE_ARGS {
        for create in [libc::O_CREAT as u64, O_TMPFILE_BIT] {
            for bit in [S_ISUID, S_ISGID] {
                rules.push(Rule {
                    name: (*name).into(),
                    action: EPERM,
                    when: When::Both([(*flags_index, create, create), (*mode_index, bit, bit)]),
                    reason: "no setuid/setgid files: the workspace belongs to the invoking user on the host"
                        .into(),
                });
            }
        }
    }
    rules.push(Rule {
        name: "openat2".into(),
        action: Action::Errno(libc::ENOSYS),
        when: When::Always,
        reason: "its mode sits behind a pointer BPF cannot read; ENOSYS makes callers fall back to openat"
            .into(),
    });
    for (request, why) in [
        (
            libc::TIOCSTI,
            "TIOCSTI pushes keystrokes into a terminal's input (typed commands run as the user)",
        ),
        (libc::TIOCLINUX, "TIOCLINUX can paste into a virtual console"),
    ] {
        rules.push(Rule {
            name: "ioctl".into(),
            action: EPERM,
            // The kernel truncates the request to 32 bits: compare only those.
            when: When::ArgMasked {
                index: 1,
                mask: 0xffff_ffff,
                value: request,
            },
            reason: why.into(),
        });
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::resolve;

    #[test]
    fn every_rule_names_a_real_syscall_and_a_reason() {
        for r in baseline() {
            assert!(resolve(&r.name).is_some(), "{}", r.name);
            assert!(r.reason.len() > 10, "{} has no reason", r.name);
        }
    }

    #[test]
    fn issue_list_is_covered() {
        let names: Vec<String> = baseline().into_iter().map(|r| r.name).collect();
        for must in [
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "io_uring_setup",
            "mount",
            "umount2",
            "unshare",
            "kexec_load",
            "init_module",
            "finit_module",
            "personality",
            "clone3",
            "chroot",
            "pivot_root",
        ] {
            assert!(names.iter().any(|n| n == must), "{must} missing");
        }
    }
}
