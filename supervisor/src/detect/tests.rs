//! The rules on synthetic events (pure logic; the kernel side is in tests/detect.rs).

use super::paths::is_own_exe;
use super::*;
use crate::kernel::{EXECVE, OPENAT};
use crate::profile::monitor::Response;

pub(super) fn config(profile: &str) -> Config {
    let p = crate::profile::load(profile).unwrap();
    let exec: Vec<std::path::PathBuf> = vec!["/usr".into(), "/home/u".into(), "/w".into()];
    Config::compile(&p.monitor, &exec, p.network.mode, |s| {
        Ok(s.replace("{home}", "/home/u").replace("{workspace}", "/w"))
    })
    .unwrap()
}

pub(super) fn detector(profile: &str) -> Detector {
    // Every synthetic path "exists" on the host, as a hidden secret would.
    Detector::new(&config(profile), Box::new(|_, _| Some("/w".to_string()))).with_host_files(|_| true)
}

#[test]
fn probing_for_a_credential_file_that_exists_nowhere_is_not_a_read() {
    let mut d = Detector::new(&config("default"), Box::new(|_, _| Some("/w".to_string())))
        .with_host_files(|p| p != "/home/u/.netrc");
    let probe = sys(
        "openat",
        OPENAT,
        "/home/u/.netrc",
        &[u64::MAX - 99, 0, 0],
        -2,
        "ENOENT",
    );
    assert!(run(&mut d, &[ev(1, 0, probe)]).is_empty());
    // The same name when the host has it (hidden in the sandbox): an attempt.
    let mut d = detector("default");
    let probe = sys(
        "openat",
        OPENAT,
        "/home/u/.netrc",
        &[u64::MAX - 99, 0, 0],
        -2,
        "ENOENT",
    );
    assert_eq!(run(&mut d, &[ev(1, 0, probe)]).len(), 1);
}

pub(super) fn ev(seq: u64, ms: u64, kind: Kind) -> pb::Event {
    pb::Event {
        seq,
        time_unix_ns: 1_000_000_000_000 + ms * 1_000_000,
        pid: 7,
        host_pid: 700,
        comm: "agent".into(),
        kind: Some(kind),
        ..Default::default()
    }
}

pub(super) fn sys(name: &str, nr: u32, path: &str, args: &[u64], ret: i64, errno: &str) -> Kind {
    Kind::Syscall(pb::Syscall {
        nr,
        name: name.into(),
        args: args.to_vec(),
        ret,
        completed: true,
        denied: errno == "EPERM" || errno == "EACCES",
        errno: errno.into(),
        path: path.into(),
        ..Default::default()
    })
}

pub(super) fn run(d: &mut Detector, events: &[pb::Event]) -> Vec<Finding> {
    let mut out = Vec::new();
    for e in events {
        d.observe(e, &mut out);
    }
    out
}

#[test]
fn sensitive_reads_fire_even_when_the_file_is_hidden() {
    let mut d = detector("default");
    let f = run(
        &mut d,
        &[ev(
            1,
            0,
            sys(
                "openat",
                OPENAT,
                "/home/u/.ssh/id_rsa",
                &[u64::MAX - 99, "/".len() as u64, 0],
                -2,
                "ENOENT",
            ),
        )],
    );
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "sensitive_read");
    assert_eq!(f[0].response, Response::Freeze);
    assert!(f[0].summary.contains("/home/u/.ssh/id_rsa"), "{}", f[0].summary);
    assert_eq!(f[0].evidence, vec![1]);
    // A read of an ordinary file does not.
    assert!(run(
        &mut d,
        &[ev(
            2,
            1,
            sys("openat", OPENAT, "/w/src/main.rs", &[0, 0, 0], 3, "")
        )]
    )
    .is_empty());
}

#[test]
fn relative_paths_are_resolved_and_write_intent_is_told_from_reads() {
    let mut d = detector("default");
    let o_wronly_creat = (libc::O_WRONLY | libc::O_CREAT) as u64;
    let f = run(
        &mut d,
        &[ev(
            1,
            0,
            sys(
                "openat",
                OPENAT,
                ".git/hooks/pre-commit",
                &[u64::MAX - 99, 0, o_wronly_creat],
                -30,
                "EROFS",
            ),
        )],
    );
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "sensitive_write");
    assert!(
        f[0].summary.contains("/w/.git/hooks/pre-commit"),
        "{}",
        f[0].summary
    );
    // git init's sample hooks are exceptions; reading a hook is not a write.
    assert!(run(
        &mut d,
        &[ev(
            2,
            1,
            sys(
                "openat",
                OPENAT,
                "/w/.git/hooks/pre-commit.sample",
                &[0, 0, o_wronly_creat],
                3,
                ""
            )
        )]
    )
    .is_empty());
    assert!(run(
        &mut d,
        &[ev(
            3,
            2,
            sys("openat", OPENAT, "/w/.git/hooks/pre-commit", &[0, 0, 0], 3, "")
        )]
    )
    .is_empty());
}

#[test]
fn rates_fire_once_per_window_over_the_limit() {
    let mut d = detector("default");
    let limit = config("default").rule("deletions").unwrap().limit;
    let events: Vec<pb::Event> = (0..limit + 1)
        .map(|i| {
            ev(
                i + 1,
                i,
                sys("unlinkat", 263, &format!("/w/f{i}"), &[0, 0, 0], 0, ""),
            )
        })
        .collect();
    // (The whole-run `deleted` budget fires too: 501 distinct workspace files.)
    let f: Vec<_> = run(&mut d, &events)
        .into_iter()
        .filter(|f| f.rule == "deletions")
        .collect();
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].score, (limit + 1) as f64);
    assert_eq!(*f[0].evidence.last().unwrap(), limit + 1);
    // The same number spread over more than the window does not fire.
    let mut d = detector("default");
    let window = config("default").rule("deletions").unwrap().window_ms;
    let slow: Vec<pb::Event> = (0..limit + 1)
        .map(|i| {
            ev(
                i + 1,
                i * (window / limit + 1),
                sys("unlinkat", 263, "/w/f", &[0, 0, 0], 0, ""),
            )
        })
        .collect();
    assert!(run(&mut d, &slow).is_empty());
}

#[test]
fn slow_deletion_of_the_workspace_is_caught_over_the_run_and_regenerated_trees_are_not() {
    let limit = config("default").rule("deleted").unwrap().limit;
    let window = config("default").rule("deletions").unwrap().window_ms;
    // One deletion every (window / 10): never near the rate, but past the run's budget.
    let slow = |prefix: &str, n: u64| -> Vec<pb::Event> {
        (0..n)
            .map(|i| {
                ev(
                    i + 1,
                    i * window / 10,
                    sys("unlinkat", 263, &format!("{prefix}/f{i}"), &[0, 0, 0], 0, ""),
                )
            })
            .collect()
    };
    let mut d = detector("default");
    let f = run(&mut d, &slow("/w/src", limit + 5));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "deleted");
    assert_eq!(f[0].window, "whole run");
    assert!(
        f[0].summary
            .starts_with(&format!("{} files deleted over the run", limit + 1)),
        "{}",
        f[0].summary
    );
    // A regenerated tree, /tmp, and one file deleted over and over: not the workspace's files.
    for prefix in [
        "/w/node_modules/pkg",
        "/w/app/node_modules",
        "/w/target/debug",
        "/tmp/x",
    ] {
        let mut d = detector("default");
        assert!(run(&mut d, &slow(prefix, limit + 5)).is_empty(), "{prefix}");
    }
    let mut d = detector("default");
    let same: Vec<pb::Event> = (0..limit + 5)
        .map(|i| {
            ev(
                i + 1,
                i * window / 10,
                sys("unlinkat", 263, "/w/lock", &[0, 0, 0], 0, ""),
            )
        })
        .collect();
    assert!(run(&mut d, &same).is_empty());
}

#[test]
fn egress_outside_the_allowlist_fires_in_every_mode() {
    let net = |ip: &str, allowed: bool| {
        Kind::Net(pb::Network {
            op: "connect".into(),
            protocol: "tcp".into(),
            ip: ip.into(),
            port: 4444,
            allowed,
            rule: String::new(),
        })
    };
    let mut d = detector("default");
    let f = run(&mut d, &[ev(1, 0, net("127.0.0.1", true))]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rule, "egress");
    let mut d = detector("ip-allowlist");
    assert!(run(&mut d, &[ev(1, 0, net("10.1.2.3", true))]).is_empty());
    let f = run(&mut d, &[ev(2, 1, net("10.1.2.3", false))]);
    assert!(f.iter().any(|f| f.rule == "egress"), "{f:?}");
}

#[test]
fn exec_outside_the_allowed_places_fires_even_when_refused() {
    let mut d = detector("default");
    let f = run(
        &mut d,
        &[ev(
            1,
            0,
            sys("execve", EXECVE, "/tmp/payload", &[0, 0, 0], -13, "EACCES"),
        )],
    );
    assert!(
        f.iter()
            .any(|f| f.rule == "exec" && f.summary.contains("/tmp/payload")),
        "{f:?}"
    );
    let ok = Kind::Exec(pb::ProcessExec {
        filename: "/usr/bin/git".into(),
        argv: vec![],
    });
    assert!(run(&mut d, &[ev(2, 1, ok)]).is_empty());
    // PATH search misses are not attempts.
    assert!(run(
        &mut d,
        &[ev(
            3,
            2,
            sys("execve", EXECVE, "/tmp/x", &[0, 0, 0], -2, "ENOENT")
        )]
    )
    .is_empty());
}

#[test]
fn a_program_run_through_the_dynamic_loader_is_checked_like_an_exec() {
    let argv = |a: &[&str]| a.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let loader = |args: &[&str]| {
        Kind::Exec(pb::ProcessExec {
            filename: "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2".into(),
            argv: argv(args),
        })
    };
    let mut d = detector("default");
    let f = run(
        &mut d,
        &[ev(
            1,
            0,
            loader(&["ld.so", "--library-path", "/tmp", "/tmp/x", "arg"]),
        )],
    );
    assert!(
        f.iter().any(|f| f.rule == "exec"
            && f.summary
                .starts_with("exec through the dynamic loader of /tmp/x, outside the allowed places")),
        "{f:?}"
    );
    // A program in an allowed place, and the loader's own queries, are not.
    assert!(run(&mut d, &[ev(2, 1, loader(&["ld.so", "/usr/bin/true"]))]).is_empty());
    assert!(run(
        &mut d,
        &[ev(3, 2, loader(&["ld.so", "--list", "--", "/usr/bin/true"]))]
    )
    .is_empty());
    assert_eq!(loader_target("/usr/bin/ldd", &argv(&["ldd", "/tmp/x"])), None);
    assert_eq!(
        loader_target(
            "/lib/ld-musl-x86_64.so.1",
            &argv(&["ld", "--preload", "a.so", "prog"])
        ),
        Some("prog")
    );
}

#[test]
fn repeated_denials_of_one_syscall_fire_and_mixed_ones_do_not() {
    let mut d = detector("default");
    let limit = config("default").rule("repeated_denials").unwrap().limit;
    let same: Vec<pb::Event> = (0..=limit)
        .map(|i| ev(i + 1, i, sys("mount", 165, "/proc", &[0, 0, 0], -1, "EPERM")))
        .collect();
    let f = run(&mut d, &same);
    assert!(
        f.iter()
            .any(|f| f.rule == "repeated_denials" && f.window.starts_with("mount")),
        "{f:?}"
    );
    let mut d = detector("default");
    let names = [
        "mount",
        "chroot",
        "setns",
        "umount2",
        "pivot_root",
        "swapon",
        "reboot",
        "sethostname",
    ];
    let mixed: Vec<pb::Event> = (0..limit)
        .map(|i| {
            ev(
                i + 1,
                i,
                sys(
                    names[usize::try_from(i).unwrap() % names.len()],
                    1000,
                    "",
                    &[0, 0, 0],
                    -1,
                    "EPERM",
                ),
            )
        })
        .collect();
    assert!(!run(&mut d, &mixed).iter().any(|f| f.rule == "repeated_denials"));
}

#[test]
fn a_flood_is_throttled_and_counted() {
    let mut cfg = config("default");
    for r in &mut cfg.rules {
        r.response = Response::Log;
    }
    let mut d = Detector::new(&cfg, Box::new(|_, _| None));
    let events: Vec<pb::Event> = (0..100)
        .map(|i| {
            ev(
                i + 1,
                i / 10,
                sys("openat", OPENAT, "/etc/shadow", &[0, 0, 0], -13, "EACCES"),
            )
        })
        .collect();
    let f = run(&mut d, &events);
    let reads = f.iter().filter(|f| f.rule == "sensitive_read").count();
    assert_eq!(u32::try_from(reads).unwrap(), REPORTS_PER_SECOND);
    assert_eq!(
        d.unreported(),
        vec![("sensitive_read", 100 - u64::from(REPORTS_PER_SECOND))]
    );
}

#[test]
fn a_program_re_executing_itself_is_not_an_exec_from_outside() {
    let mut d = detector("default");
    for path in ["/proc/self/exe", "/proc/42/exe", "/proc/thread-self/exe"] {
        let again = Kind::Exec(pb::ProcessExec {
            filename: path.into(),
            argv: vec![],
        });
        assert!(run(&mut d, &[ev(1, 0, again)]).is_empty(), "{path}");
    }
    assert!(!is_own_exe("/proc/self/root/tmp/x") && !is_own_exe("/proc//exe"));
    // `exec.allow = ["/usr"]` means beneath /usr, as filesystem.executable does.
    let p = crate::profile::load("default").unwrap();
    let mut m = p.monitor.clone();
    for r in &mut m.rules {
        if r.name == "exec" {
            r.patterns = Some(vec!["/opt/tools".into()]);
        }
    }
    let cfg = Config::compile(&m, &[], p.network.mode, |s| Ok(s.to_string())).unwrap();
    let mut d = Detector::new(&cfg, Box::new(|_, _| Some("/w".to_string())));
    let exec = |f: &str| {
        Kind::Exec(pb::ProcessExec {
            filename: f.into(),
            argv: vec![],
        })
    };
    assert!(run(&mut d, &[ev(1, 0, exec("/opt/tools/bin/x"))]).is_empty());
    assert!(!run(&mut d, &[ev(2, 1, exec("/tmp/x"))]).is_empty());
}

#[test]
fn a_name_lookup_without_a_network_is_not_an_alarm() {
    let mut d = detector("default");
    let lookup = Kind::Net(pb::Network {
        op: "sendmsg".into(),
        protocol: "udp".into(),
        ip: "10.255.255.53".into(),
        port: 53,
        allowed: false,
        rule: String::new(),
    });
    assert!(run(&mut d, &[ev(1, 0, lookup)]).is_empty());
    let connect = Kind::Net(pb::Network {
        op: "connect".into(),
        protocol: "tcp".into(),
        ip: "203.0.113.9".into(),
        port: 443,
        allowed: false,
        rule: String::new(),
    });
    assert!(run(&mut d, &[ev(2, 1, connect)])
        .iter()
        .any(|f| f.rule == "egress"));
}

#[test]
fn a_proxied_connect_is_paired_with_its_syscall_across_other_threads_events() {
    // Codex 0.171 under the codex preset: thread A's connect to a stand-in address is allowed
    // by the proxy hook, thread B looks a name up, then A's non-blocking connect returns.
    let mut d = detector("agent");
    let on = |tid: u32, mut e: pb::Event| {
        e.host_tid = tid;
        e
    };
    let hook = |op: &str, ip: &str, port: u32| {
        Kind::Net(pb::Network {
            op: op.into(),
            protocol: if port == 53 { "udp" } else { "tcp" }.into(),
            ip: ip.into(),
            port,
            allowed: true,
            rule: "proxy".into(),
        })
    };
    let Kind::Syscall(mut connect) = sys("connect", 42, "", &[9, 0, 16], -115, "EINPROGRESS") else {
        unreachable!()
    };
    connect.addr = Some(pb::SocketAddress {
        family: "inet".into(),
        ip: "198.18.0.2".into(),
        port: 443,
        path: String::new(),
    });
    let f = run(
        &mut d,
        &[
            on(701, ev(1, 0, hook("connect", "198.18.0.2", 443))),
            on(702, ev(2, 0, hook("sendmsg", "127.0.0.1", 53))),
            on(701, ev(3, 1, Kind::Syscall(connect.clone()))),
        ],
    );
    assert!(f.iter().all(|f| f.rule != "egress"), "{f:?}");
    // The same connect with no hook report was refused before the hooks: still an attempt.
    connect.ret = -1;
    connect.errno = "EPERM".into();
    let f = run(&mut d, &[on(703, ev(4, 2, Kind::Syscall(connect)))]);
    assert!(f.iter().any(|f| f.rule == "egress"), "{f:?}");
}

#[test]
fn one_noisy_target_does_not_hide_another() {
    let mut cfg = config("default");
    for r in &mut cfg.rules {
        r.response = Response::Log;
    }
    let mut d = Detector::new(&cfg, Box::new(|_, _| None));
    // A hundred reads of one file in the same second, then the one read that matters.
    let mut events: Vec<pb::Event> = (0..100)
        .map(|i| {
            ev(
                i + 1,
                0,
                sys("openat", OPENAT, "/etc/shadow", &[0, 0, 0], -13, "EACCES"),
            )
        })
        .collect();
    events.push(ev(
        101,
        0,
        sys("openat", OPENAT, "/home/u/.ssh/id_rsa", &[0, 0, 0], 3, ""),
    ));
    let f = run(&mut d, &events);
    assert!(
        f.iter()
            .any(|f| f.rule == "sensitive_read" && f.summary.contains("/home/u/.ssh/id_rsa")),
        "{f:?}"
    );
    assert_eq!(
        f.iter().filter(|f| f.summary.contains("/etc/shadow")).count(),
        usize::try_from(REPORTS_PER_SECOND).unwrap()
    );
}

#[test]
fn written_budget() {
    let mut d = detector("default");
    let limit = config("default").rule("written").unwrap().limit;
    let mut out = Vec::new();
    d.written(limit, 1, &mut out);
    assert!(out.is_empty());
    d.written(limit + 1, 2, &mut out);
    d.written(limit + 2, 3, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rule, "written");
}

fn sys2(name: &str, nr: u32, path: &str, path2: &str, args: &[u64]) -> Kind {
    let Kind::Syscall(mut s) = sys(name, nr, path, args, 0, "") else {
        unreachable!()
    };
    s.path2 = path2.into();
    Kind::Syscall(s)
}

#[test]
fn both_paths_of_two_path_syscalls_resolve_against_their_own_directory_arguments() {
    // fd 5 is the workspace's .git/hooks, fd 6 the home; AT_FDCWD is the workspace.
    let lookup = |_: u32, fd: i64| match fd {
        5 => Some("/w/.git/hooks".to_string()),
        6 => Some("/home/u".to_string()),
        _ => None,
    };
    let mut d = Detector::new(&config("default"), Box::new(lookup));
    let cwd = u64::from(libc::AT_FDCWD as u32);
    let f = run(
        &mut d,
        &[
            // os.rename("payload", "pre-commit", src_dir_fd=cwd, dst_dir_fd=hooks)
            ev(
                1,
                0,
                sys2("renameat", 264, "payload", "pre-commit", &[cwd, 0, 5, 0]),
            ),
            // renameat2 into the home's .bashrc, refused
            ev(2, 1, sys2("renameat2", 316, "x", ".bashrc", &[cwd, 0, 6, 0, 0])),
            // symlinkat(target, home fd, ".profile")
            ev(3, 2, sys2("symlinkat", 266, "/w/evil", ".profile", &[0, 6, 0])),
            // linkat(cwd, "payload", hooks fd, "post-checkout")
            ev(
                4,
                3,
                sys2("linkat", 265, "payload", "post-checkout", &[cwd, 0, 5, 0, 0]),
            ),
        ],
    );
    let what: Vec<&str> = f.iter().map(|x| x.summary.as_str()).collect();
    assert_eq!(f.len(), 4, "{what:?}");
    assert!(what[0].contains("/w/.git/hooks/pre-commit"), "{what:?}");
    assert!(what[1].contains("/home/u/.bashrc"), "{what:?}");
    assert!(what[2].contains("/home/u/.profile"), "{what:?}");
    assert!(what[3].contains("/w/.git/hooks/post-checkout"), "{what:?}");
}

#[test]
fn a_directory_renamed_onto_a_protected_name_writes_everything_beneath_it() {
    let mut d = detector("default");
    let cwd = u64::from(libc::AT_FDCWD as u32);
    let f = run(
        &mut d,
        &[
            ev(1, 0, sys2("rename", 82, "staging", ".vscode", &[])),
            ev(2, 1, sys2("renameat", 264, "h", ".git/hooks", &[cwd, 0, cwd, 0])),
            // Renaming to an ordinary name is not a write of a protected path.
            ev(3, 2, sys2("rename", 82, "a", "src/b", &[])),
        ],
    );
    let what: Vec<&str> = f.iter().map(|x| x.summary.as_str()).collect();
    assert_eq!(f.len(), 2, "{what:?}");
    assert!(
        what[0].contains("/w/.vscode") && what[0].contains("(beneath)"),
        "{what:?}"
    );
    assert!(what[1].contains("/w/.git/hooks"), "{what:?}");
}

#[test]
fn processes_counts_a_storm_that_stays_alive_not_a_loop_of_short_commands() {
    let fork = |n: u32| {
        Kind::Fork(pb::ProcessFork {
            child_pid: n,
            child_host_pid: n + 1000,
            thread: false,
        })
    };
    let exit = Kind::Exit(pb::ProcessExit {
        status: 0,
        signal: 0,
        process: true,
    });
    // A shell loop: 900 commands in 2 s, each gone before the next.
    let mut d = detector("default");
    let mut churn = Vec::new();
    for i in 0..900u32 {
        churn.push(ev(u64::from(2 * i), u64::from(i) * 2, fork(i + 2)));
        churn.push(ev(u64::from(2 * i + 1), u64::from(i) * 2 + 1, exit.clone()));
    }
    let found = run(&mut d, &churn);
    assert!(!found.iter().any(|f| f.rule == "processes"), "{found:?}");
    // A fork storm: 700 processes in 1 s, none exiting.
    let mut d = detector("default");
    let storm: Vec<_> = (0..700u32)
        .map(|i| ev(u64::from(i), u64::from(i), fork(i + 2)))
        .collect();
    let found = run(&mut d, &storm);
    assert!(found.iter().any(|f| f.rule == "processes"), "{found:?}");
}
