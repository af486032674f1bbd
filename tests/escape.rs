//! The escape suite: more than 90 hostile probes run inside the `default` profile (its monitor
//! rules only logging: the kernel layers are under test here), once with
//! cordon started by root and once by an unprivileged user through sudo. Every probe must
//! end with the exact errno (or signal) listed here, and the host must show no effect.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::Path;
use std::process::Command;

fn expected() -> BTreeMap<&'static str, String> {
    let e = |s: &str| format!("errno:{s}");
    let host_has = |p: &str| Path::new(p).exists();
    let mut m: BTreeMap<&'static str, String> = BTreeMap::new();
    for (name, errno) in [
        ("write_etc", "EROFS"),
        ("write_usr", "EROFS"),
        ("write_root_dir", "EROFS"),
        ("write_home", "EROFS"),
        ("write_bashrc", "EROFS"),
        ("write_via_symlink", "EROFS"),
        ("write_via_symlink_unmounted", "ENOENT"),
        ("hardlink_etc_passwd", "EXDEV"),
        ("rename_out_of_workspace", "EXDEV"),
        ("chmod_system_binary", "EROFS"),
        ("write_git_hook", "EROFS"),
        ("write_git_config", "EROFS"),
        ("hardlink_git_hook", "EXDEV"),
        ("rename_git_hooks", "EBUSY"),
        // .git is pinned (bound onto itself): it cannot be swapped for an agent-made one.
        ("swap_git_dir", "EBUSY"),
        ("remove_git_dir", "EBUSY"),
        ("chmod_setuid", "EPERM"),
        ("chmod_setgid", "EPERM"),
        ("create_setuid", "EPERM"),
        ("fchmodat2_setuid", "EPERM"),
        ("openat2", "ENOSYS"),
        ("write_dev", "EROFS"),
        ("write_proc_core_pattern", "EROFS"),
        ("write_proc_hostname", "EROFS"),
        ("sysfs_cgroup", "ENOENT"),
        ("dev_mem", "ENOENT"),
        ("mknod_char_device", "EPERM"),
        // landlock: nothing outside the profile's executable paths may be executed.
        ("exec_from_tmp", "EACCES"),
        // vm.memfd_noexec = 2 in the sandbox's pid namespace: MFD_EXEC is refused.
        ("memfd_create_exec", "EACCES"),
        ("read_ssh_key", "ENOENT"),
        ("read_aws_credentials", "ENOENT"),
        // ~/.aws is a symlink: the mask lands on its target inside the sandbox.
        ("read_aws_via_symlink_target", "ENOENT"),
        ("read_gh_token", "ENOENT"),
        ("read_etc_shadow", "EACCES"),
        ("read_root_home", "ENOENT"),
        ("proc_init_environ", "EACCES"),
        ("proc_init_mem", "EACCES"),
        ("see_host_pid", "ENOENT"),
        ("kill_host_pid", "ESRCH"),
        ("ptrace_attach_init", "EPERM"),
        ("ptrace_traceme", "EPERM"),
        ("process_vm_readv", "EPERM"),
        ("kcmp", "EPERM"),
        ("pidfd_getfd", "EPERM"),
        ("tcp_connect_loopback", "EACCES"),
        ("tcp_connect_other_loopback", "EACCES"),
        ("tcp6_connect_loopback", "EACCES"),
        ("tcp_bind_listen", "EACCES"),
        ("udp_sendto_other_loopback", "ENETUNREACH"),
        ("udp_sendto_loopback", "ENETUNREACH"),
        ("raw_socket", "EPERM"),
        ("packet_socket", "EPERM"),
        ("abstract_unix_host", "ECONNREFUSED"),
        ("docker_socket", "ENOENT"),
        ("interface_up", "EPERM"),
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("io_uring_setup", "EPERM"),
        ("userfaultfd", "EPERM"),
        ("unshare_user", "EPERM"),
        ("unshare_mount", "EPERM"),
        ("clone_newuser", "EPERM"),
        ("clone3", "ENOSYS"),
        ("setns", "EPERM"),
        ("mount_tmpfs", "EPERM"),
        ("umount_hidden", "EPERM"),
        ("chroot", "EPERM"),
        ("pivot_root", "EPERM"),
        ("open_tree", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("init_module", "EPERM"),
        ("finit_module", "EPERM"),
        ("kexec_load", "EPERM"),
        ("reboot", "EPERM"),
        ("swapon", "EPERM"),
        ("syslog_read", "EPERM"),
        ("settimeofday", "EPERM"),
        ("iopl", "EPERM"),
        ("sethostname", "EPERM"),
        // uid 0 is not mapped in the sandbox's user namespace at all.
        ("setuid_root", "EINVAL"),
        ("capset_all", "EPERM"),
        ("personality_no_aslr", "EPERM"),
        ("personality_read_implies_exec", "EPERM"),
        ("tiocsti", "EPERM"),
        // The kernel truncates the request to 32 bits; the filter must too (else ENOTTY).
        ("tiocsti_high_bits", "EPERM"),
        ("file_size_limit", "EFBIG"),
        ("fill_tmp", "ENOSPC"),
        ("fork_bomb", "EAGAIN"),
    ] {
        m.insert(name, e(errno));
    }
    // Kernel files this host may not have at all; where it has them they are read-only/blank.
    m.insert(
        "write_sysrq_trigger",
        e(if host_has("/proc/sysrq-trigger") {
            "EROFS"
        } else {
            "ENOENT"
        }),
    );
    m.insert(
        "read_kcore",
        if host_has("/proc/kcore") {
            "ok:0".into()
        } else {
            e("ENOENT")
        },
    );
    m.insert("read_bash_history", "ok:0".into());
    m.insert("env_secret", "ok:absent".into());
    m.insert("proc_self_environ_secret", "ok:absent".into());
    m.insert("count_visible_pids", "ok:few".into());
    // Non-native ABIs kill the process with SIGSYS (31).
    m.insert("int80_i386", "signal:31".into());
    m.insert("x32_syscall", "signal:31".into());
    // The kernel's OOM killer ends the hog inside the sandbox's memory limit.
    m.insert("memory_hog", "ok:returncode=-9".into());
    // /tmp is noexec: the loader cannot map the program (it exits 127).
    m.insert("exec_via_loader_from_tmp", "ok:127".into());
    // A memfd created without flags is sealed non-executable: execve fails with EACCES (13).
    m.insert("exec_memfd", format!("ok:{}", 200 + libc::EACCES));
    m
}

fn escape_suite(caller: Caller, abstract_name: &str) {
    require_root();
    let s = Scratch::new();
    let home = s.dir("home");
    s.file("home/.ssh/id_rsa", "-----BEGIN OPENSSH PRIVATE KEY-----");
    s.file("home/aws-real/credentials", "aws_secret_access_key = AKIA");
    std::os::unix::fs::symlink("aws-real", home.join(".aws")).unwrap();
    s.file("home/.config/gh/hosts.yml", "oauth_token: gho_");
    s.file("home/.bash_history", "mysql -p hunter2");
    let bashrc = s.file("home/.bashrc", "alias ll='ls -l'\n");
    let ws = s.dir("ws");
    s.file("ws/.git/hooks/post-checkout", "#!/bin/sh\n");
    let git_config = s.file("ws/.git/config", "[core]\n");
    let helper = ws.join("helper");
    let gcc = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&helper)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/probes/helper.c"))
        .status()
        .expect("gcc");
    assert!(gcc.success());
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/probes/escape.py"),
        ws.join("escape.py"),
    )
    .unwrap();
    chown_tree(s.path(), caller.owner());

    let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(abstract_name).unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let core_pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    // The kernel layers are under test: the monitor only logs (it would freeze the sandbox at
    // the first probe; tests/detect.rs covers that).
    let profile = log_only_profile(&s, "escape", "default", "");
    let mut c = run_cmd(
        &profile,
        &ws,
        &["--home", home.to_str().unwrap()],
        &[
            "python3",
            "escape.py",
            &sleeper.id().to_string(),
            home.to_str().unwrap(),
            ws.to_str().unwrap(),
            helper.to_str().unwrap(),
            abstract_name,
        ],
    );
    caller.apply(&mut c);
    c.env("SECRET_TOKEN", "hunter2-canary");
    let out = output(c);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "probe script failed:\n{text}\n{}",
        stderr(&out)
    );

    let got: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('\t')).collect();
    let want = expected();
    let mut failures = Vec::new();
    for (name, w) in &want {
        match got.get(name) {
            Some(g) if g == w => {}
            Some(g) => failures.push(format!("{name}: expected {w}, got {g}")),
            None => failures.push(format!("{name}: did not run")),
        }
    }
    for name in got.keys() {
        if !want.contains_key(name) {
            failures.push(format!("{name}: no expectation"));
        }
    }
    assert!(want.len() >= 90, "the suite shrank to {} probes", want.len());

    // What the host must still look like.
    let alive = sleeper.try_wait().unwrap().is_none();
    sleeper.kill().ok();
    sleeper.wait().ok();
    if !alive {
        failures.push("host process was killed".into());
    }
    for p in [
        "/etc/cordon-escape",
        "/etc/cordon-escape-link",
        "/usr/cordon-escape",
        "/etc/mv",
        "/cordon-escape",
    ] {
        if Path::new(p).exists() {
            failures.push(format!("{p} appeared on the host"));
        }
    }
    for p in [home.join("cordon-escape"), ws.join(".git/hooks/pre-commit")] {
        if p.exists() {
            failures.push(format!("{} appeared on the host", p.display()));
        }
    }
    if std::fs::read_to_string(&bashrc).unwrap() != "alias ll='ls -l'\n" {
        failures.push(".bashrc changed".into());
    }
    if std::fs::read_to_string(&git_config).unwrap() != "[core]\n" {
        failures.push(".git/config changed".into());
    }
    if std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap() != core_pattern {
        failures.push("core_pattern changed".into());
    }
    if std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap() != hostname {
        failures.push("host name changed".into());
    }
    if listener.accept().is_ok() {
        failures.push("the host's abstract socket accepted a connection".into());
    }
    use std::os::unix::fs::PermissionsExt;
    for f in ["suid", "suid2"] {
        let p = ws.join(f);
        if p.exists() && std::fs::metadata(&p).unwrap().permissions().mode() & 0o6000 != 0 {
            failures.push(format!("{} is setuid/setgid on the host", p.display()));
        }
    }
    // Files the agent made in the workspace belong to the invoking user on the host.
    assert_eq!(owner_of(&ws.join("big")), caller.owner());
    assert!(
        failures.is_empty(),
        "{caller:?}: {} escapes not blocked as expected:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

#[test]
fn escapes_are_blocked_for_a_root_caller() {
    escape_suite(Caller::Root, "cordon-escape-root");
}

#[test]
fn escapes_are_blocked_for_a_sudo_caller() {
    escape_suite(Caller::Sudo(SUDO_TEST_UID), "cordon-escape-sudo");
}

/// Issue 21, item 1: the agent plants git configuration that runs a command the next time
/// someone runs `git status` in the workspace — through a nested repository added to the
/// outer index as a gitlink, and through a gitdir outside any `.git` (`--separate-git-dir`).
/// The run must report each as a `persistence` detection and a WARNING whose command removes
/// it; a copy of the workspace shows the attack is real (`git status` there runs the planted
/// command), and after the warnings' commands ran, `git status` runs nothing.
fn planted_git_code(caller: Caller) {
    require_root();
    let s = Scratch::new();
    let ws = s.dir("ws");
    let marks = s.dir("marks");
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let git = |dir: &Path, args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&ws, &["init", "-q", "."]);
    git(&ws, &["commit", "-q", "--allow-empty", "-m", "start"]);
    chown_tree(s.path(), caller.owner());
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let m = marks.display();
    let attack = format!(
        "set -e\n\
         g() {{ git -c user.name=a -c user.email=a@example.invalid \"$@\"; }}\n\
         mkdir sub && cd sub && g init -q . && g commit -q --allow-empty -m s\n\
         printf '[core]\\n\\tfsmonitor = \"touch {m}/sub; false\"\\n' >> .git/config\n\
         S=$(g rev-parse HEAD) && cd ..\n\
         g update-index --add --cacheinfo 160000,$S,sub\n\
         mkdir v2 && cd v2 && g init -q --separate-git-dir=../.g2 .\n\
         printf '[core]\\n\\tfsmonitor = \"touch {m}/g2; false\"\\n' >> ../.g2/config\n\
         printf '#!/bin/sh\\ntouch {m}/hook\\n' > ../.g2/hooks/post-checkout && chmod +x ../.g2/hooks/post-checkout\n\
         echo planted; sleep 1"
    );
    let ev = s.path().join("events.jsonl");
    let profile = log_only_profile(&s, "plant", "default", "");
    let mut c = run_cmd(
        &profile,
        &ws,
        &["--events", ev.to_str().unwrap()],
        &["/bin/sh", "-c", &attack],
    );
    caller.apply(&mut c);
    let out = output(c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{}\n{err}", stdout(&out));
    assert!(stdout(&out).contains("planted"), "{err}");

    // Reported: each vector, in the trace's events and on stderr.
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("cordon: WARNING: the agent left code that runs later: "))
        .collect();
    for (vector, what) in [
        ("git-config", "/sub/.git/config core.fsmonitor"),
        ("gitlink", "/.git/index sub"),
        ("git-config", "/.g2/config core.fsmonitor"),
        ("git-hook", "/.g2/hooks/post-checkout"),
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&format!("{vector}: ")) && w.contains(what)),
            "no {vector} warning for {what}:\n{err}"
        );
    }
    let events = std::fs::read_to_string(&ev).unwrap();
    let detections = events
        .lines()
        .filter(|l| l.contains("\"rule\":\"persistence\""))
        .count();
    assert!(detections >= warnings.len(), "{events}");
    // The live watch saw the separate gitdir's config while the agent ran, not only after.
    let live = events.lines().any(|l| {
        l.contains("\"rule\":\"persistence\"")
            && l.contains("\"window\":\"live\"")
            && l.contains("/.g2/config core.fsmonitor")
    });
    assert!(live, "no live persistence alert for .g2/config:\n{events}");

    let git_status_as_user = |dir: &Path| {
        // The workspace's owner differs from this user for a root caller: safe.directory
        // lets git work there anyway, as a user who trusts the directory would set it.
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={SUDO_TEST_UID}"),
                &format!("--regid={SUDO_TEST_UID}"),
                "--clear-groups",
            ])
            .args(["git", "-c", "safe.directory=*", "status", "--short"])
            .current_dir(dir)
            .env("HOME", "/nonexistent")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let planted = |name: &str| marks.join(name).exists();

    // The attack is real: in a copy of the workspace as the agent left it, git runs both.
    let copy = s.path().join("copy");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&ws)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    let copy_g2 = s.path().join(".g2");
    assert!(!copy_g2.exists());
    git_status_as_user(&copy);
    git_status_as_user(&copy.join("v2"));
    assert!(
        planted("sub") && planted("g2"),
        "the planted commands did not run in the copy"
    );
    for name in ["sub", "g2"] {
        std::fs::remove_file(marks.join(name)).unwrap();
    }

    // Following the warnings removes every one: git then runs nothing.
    for w in &warnings {
        let cmd = w
            .split_once("(inspect: ")
            .and_then(|(_, c)| c.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no command in {w}"));
        // As the user who ran cordon (whose workspace it is).
        let u = caller.owner();
        let st = Command::new("setpriv")
            .args([&format!("--reuid={u}"), &format!("--regid={u}"), "--clear-groups"])
            .args(["sh", "-c", cmd])
            .current_dir(&ws)
            .env("HOME", "/nonexistent")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    }
    for dir in [ws.clone(), ws.join("sub"), ws.join("v2")] {
        let e = git_status_as_user(&dir);
        assert!(
            !planted("sub") && !planted("g2"),
            "git status in {} ran a planted command: {e}",
            dir.display()
        );
    }
}

#[test]
fn planted_git_code_is_reported_for_a_root_caller() {
    planted_git_code(Caller::Root);
}

#[test]
fn planted_git_code_is_reported_for_a_sudo_caller() {
    planted_git_code(Caller::Sudo(SUDO_TEST_UID));
}
