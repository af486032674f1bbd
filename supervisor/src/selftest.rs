//! `cordon selftest`: the red team as a product feature. A battery of escape and abuse
//! attempts, run *inside* a sandbox of a profile on this host by a copy of cordon itself
//! (`cordon __selftest`, placed in the throwaway workspace), one result per attempt. Each
//! attempt is made for real and judged by its effect: a refused call, a process the kernel
//! killed, a limit hit. Nothing leaves the machine: the one connect goes to a port cordon
//! itself listens on at the host's loopback.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One attempt and what came of it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attempt {
    /// The family: namespaces, mounts, ptrace, /proc, kernel, io_uring, terminal, ABI,
    /// filesystem, network, resources, secrets.
    pub family: String,
    pub what: String,
    /// The layer expected to stop it.
    pub layer: String,
    pub blocked: bool,
    /// The errno, signal or effect seen.
    pub detail: String,
}

/// What the battery needs from outside the sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    /// A port cordon listens on at the host's 127.0.0.1; what it says to whoever connects
    /// (reaching something else on that port — a proxy inside the sandbox — is not the host).
    pub host_port: u16,
    #[serde(default)]
    pub host_token: String,
    /// Directories the profile promises are never written (invariants).
    pub never_write: Vec<PathBuf>,
    /// The home, and what its ~/.ssh holds on the host (names and content hashes: the
    /// battery tells the host's keys from the canaries cordon plants in their place).
    pub home: PathBuf,
    pub ssh_on_host: Vec<Entry>,
    /// The profile's process limit, if any.
    pub pids: Option<u32>,
}

/// An entry of a directory: its name and, for a readable file, the BLAKE3 of its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub hash: Option<String>,
}

/// The entries of `dir` (none if it cannot be read).
pub fn entries(dir: &Path) -> Vec<Entry> {
    let Ok(d) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    d.flatten()
        .map(|e| Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            hash: std::fs::read(e.path())
                .ok()
                .map(|b| blake3::hash(&b).to_hex().to_string()),
        })
        .collect()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn name(e: i32) -> String {
    crate::kernel::errno_name(i64::from(e))
}

/// A raw call: blocked when it returns -1 (with the errno seen).
fn call(family: &str, what: &str, layer: &str, ret: i64) -> Attempt {
    let e = errno();
    Attempt {
        family: family.into(),
        what: what.into(),
        layer: layer.into(),
        blocked: ret < 0,
        detail: if ret < 0 { name(e) } else { "succeeded".into() },
    }
}

/// A call that is blocked only by EPERM (other errors mean it reached the kernel's own checks).
fn refused_eperm(family: &str, what: &str, layer: &str, ret: i64) -> Attempt {
    let e = errno();
    Attempt {
        family: family.into(),
        what: what.into(),
        layer: layer.into(),
        blocked: ret < 0 && e == libc::EPERM,
        detail: if ret < 0 { name(e) } else { "succeeded".into() },
    }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

/// Run `f` in a child process; how it ended (exit status, or the signal that killed it).
fn in_child(f: impl FnOnce() -> i32) -> Result<i32, i32> {
    // SAFETY: the child only runs `f` and exits; no locks are taken between fork and exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

/// The battery, run inside the sandbox.
pub fn run(setup: &Setup) -> Vec<Attempt> {
    let mut out = Vec::new();
    // Every raw call below: plain syscalls with valid or null pointers; a failure is the
    // expected outcome and is only read back through errno.
    // SAFETY: as said above.
    unsafe {
        out.push(call(
            "namespaces",
            "unshare(CLONE_NEWUSER): a user namespace of its own",
            "seccomp",
            i64::from(libc::unshare(libc::CLONE_NEWUSER)),
        ));
        out.push(call(
            "namespaces",
            "unshare(CLONE_NEWNS): a mount namespace of its own",
            "seccomp",
            i64::from(libc::unshare(libc::CLONE_NEWNS)),
        ));
        out.push(call(
            "namespaces",
            "setns into pid 1's mount namespace",
            "seccomp",
            {
                let f = libc::open(c"/proc/1/ns/mnt".as_ptr(), libc::O_RDONLY);
                if f < 0 {
                    -1
                } else {
                    i64::from(libc::setns(f, 0))
                }
            },
        ));
        out.push(call(
            "mounts",
            "mount a tmpfs over /tmp",
            "seccomp",
            i64::from(libc::mount(
                c"none".as_ptr(),
                c"/tmp".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )),
        ));
        out.push(call(
            "mounts",
            "fsopen(\"tmpfs\"): the new mount API",
            "seccomp",
            libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0),
        ));
        out.push(call(
            "mounts",
            "chroot(\"/tmp\")",
            "seccomp",
            i64::from(libc::chroot(c"/tmp".as_ptr())),
        ));
        out.push(call(
            "ptrace",
            "ptrace(PTRACE_ATTACH) to the parent",
            "seccomp",
            libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0),
        ));
        let mut buf = [0u8; 8];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: 0x400000 as *mut libc::c_void,
            iov_len: 8,
        };
        out.push(call(
            "ptrace",
            "process_vm_readv of the parent's memory",
            "seccomp",
            libc::process_vm_readv(libc::getppid(), &raw const local, 1, &raw const remote, 1, 0) as i64,
        ));
        out.push(call(
            "/proc",
            "open /proc/1/mem (the sandbox's init)",
            "ptrace access mode / user namespace",
            i64::from(libc::open(c"/proc/1/mem".as_ptr(), libc::O_RDONLY)),
        ));
        out.push(call(
            "/proc",
            "open /proc/sysrq-trigger for writing",
            "mounts (read-only /proc entries)",
            i64::from(libc::open(c"/proc/sysrq-trigger".as_ptr(), libc::O_WRONLY)),
        ));
        out.push(call(
            "/proc",
            "read /proc/kcore",
            "mounts (blanked /proc entries)",
            {
                let f = libc::open(c"/proc/kcore".as_ptr(), libc::O_RDONLY);
                if f < 0 {
                    -1
                } else {
                    let n = libc::read(f, buf.as_mut_ptr().cast(), 8);
                    if n > 0 {
                        0
                    } else {
                        -1
                    }
                }
            },
        ));
        out.push(refused_eperm(
            "kernel",
            "bpf(BPF_PROG_LOAD)",
            "seccomp",
            libc::syscall(libc::SYS_bpf, 5, std::ptr::null::<u8>(), 0),
        ));
        out.push(refused_eperm(
            "kernel",
            "perf_event_open",
            "seccomp",
            libc::syscall(libc::SYS_perf_event_open, std::ptr::null::<u8>(), 0, -1, -1, 0),
        ));
        out.push(refused_eperm(
            "kernel",
            "init_module",
            "seccomp",
            libc::syscall(libc::SYS_init_module, std::ptr::null::<u8>(), 0, c"".as_ptr()),
        ));
        out.push(refused_eperm(
            "kernel",
            "keyctl (kernel keyrings are not namespaced)",
            "seccomp",
            libc::syscall(libc::SYS_keyctl, 0, 0, 0),
        ));
        out.push(refused_eperm(
            "kernel",
            "userfaultfd",
            "seccomp",
            libc::syscall(libc::SYS_userfaultfd, 0),
        ));
        out.push(refused_eperm(
            "io_uring",
            "io_uring_setup (I/O seccomp never sees)",
            "seccomp",
            libc::syscall(libc::SYS_io_uring_setup, 1, std::ptr::null::<u8>()),
        ));
        let c = b'x';
        out.push(call(
            "terminal",
            "TIOCSTI: push a keystroke into the terminal",
            "seccomp",
            i64::from(libc::ioctl(0, libc::TIOCSTI, &raw const c)),
        ));
    }
    // ABI bypasses: a call through the 32-bit entry or the x32 bit; seccomp kills the process.
    for (what, nr) in [
        ("int 0x80 (the i386 entry) getpid", 0_i64),
        ("x32 getpid (nr | 0x40000000)", 0x4000_0000 | 39),
    ] {
        let ended = in_child(|| {
            if nr == 0 {
                let mut ax: i64 = 20;
                // SAFETY: the i386 getpid through int 0x80; no memory is touched.
                unsafe { std::arch::asm!("int 0x80", inout("rax") ax, options(nostack)) };
                if ax >= 0 {
                    0
                } else {
                    3
                }
            } else {
                // SAFETY: a raw syscall with no arguments.
                let r = unsafe { libc::syscall(nr) };
                if r >= 0 {
                    0
                } else {
                    3
                }
            }
        });
        let (blocked, detail) = match ended {
            Err(sig) if sig == libc::SIGSYS => (true, "killed by SIGSYS".to_string()),
            Err(sig) => (true, format!("killed by signal {sig}")),
            Ok(0) => (false, "the call ran".to_string()),
            Ok(_) => (true, "refused".to_string()),
        };
        out.push(Attempt {
            family: "ABI".into(),
            what: what.into(),
            layer: "seccomp".into(),
            blocked,
            detail,
        });
    }
    filesystem(setup, &mut out);
    network(setup, &mut out);
    resources(setup, &mut out);
    secrets(&mut out);
    out
}

fn filesystem(setup: &Setup, out: &mut Vec<Attempt>) {
    for dir in &setup.never_write {
        let f = dir.join(format!(".cordon-selftest-{}", std::process::id()));
        let c = cstr(&f);
        // SAFETY: creates (exclusively) and, if that worked, removes at once a file of ours.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600) };
        let e = errno();
        if fd >= 0 {
            // SAFETY: our own descriptor and file.
            unsafe {
                libc::close(fd);
                libc::unlink(c.as_ptr());
            }
        }
        out.push(Attempt {
            family: "filesystem".into(),
            what: format!(
                "create a file in {} (the profile promises never_write)",
                dir.display()
            ),
            layer: "mounts and landlock".into(),
            blocked: fd < 0,
            detail: if fd < 0 {
                name(e)
            } else {
                "created (and removed)".into()
            },
        });
    }
    // What the sandbox shows of ~/.ssh may be cordon's own canaries (decoy keys planted where
    // the real ones are hidden): a leak is an entry of the host's, same name and content.
    let ssh = setup.home.join(".ssh");
    let inside = entries(&ssh);
    let leaked = inside.iter().filter(|e| setup.ssh_on_host.contains(e)).count();
    out.push(Attempt {
        family: "secrets".into(),
        what: format!(
            "list {} ({} entries on the host)",
            ssh.display(),
            setup.ssh_on_host.len()
        ),
        layer: "mounts (hidden)".into(),
        blocked: leaked == 0,
        detail: if setup.ssh_on_host.is_empty() {
            "nothing there on the host to hide".into()
        } else {
            format!(
                "{leaked} of the host's seen ({} entries shown, canaries included)",
                inside.len()
            )
        },
    });
    // A program planted in /tmp and run.
    let planted = Path::new("/tmp").join(format!("cordon-selftest-{}", std::process::id()));
    let copied = std::fs::copy("/bin/true", &planted).is_ok() && {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755)).is_ok()
    };
    let ran = copied
        && std::process::Command::new(&planted)
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&planted);
    out.push(Attempt {
        family: "filesystem".into(),
        what: "run a program planted in /tmp".into(),
        layer: "landlock (and a noexec mount)".into(),
        blocked: !ran,
        detail: if !copied {
            "could not plant it".into()
        } else if ran {
            "it ran".into()
        } else {
            "EACCES".into()
        },
    });
}

fn network(setup: &Setup, out: &mut Vec<Attempt>) {
    if setup.host_port == 0 {
        return;
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], setup.host_port));
    // Through only if the host's service answers with its token: a connect inside the
    // sandbox's own network namespace (its proxy may listen on the same port) reaches nothing
    // of the host.
    let heard = |mut c: std::net::TcpStream| -> Result<bool, std::io::Error> {
        use std::io::Read as _;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = [0u8; 128];
        let n = c.read(&mut buf)?;
        Ok(!setup.host_token.is_empty() && buf[..n].starts_with(setup.host_token.as_bytes()))
    };
    let r = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(heard);
    out.push(Attempt {
        family: "network".into(),
        what: format!(
            "connect to a service on the host's loopback (127.0.0.1:{})",
            setup.host_port
        ),
        layer: "network namespace, landlock, egress hooks".into(),
        blocked: !matches!(r, Ok(true)),
        detail: match r {
            Ok(true) => "connected: the host's service answered".into(),
            Ok(false) => "connected to something else on that port (not the host's service)".into(),
            Err(e) => e.raw_os_error().map_or_else(|| e.to_string(), name),
        },
    });
}

fn resources(setup: &Setup, out: &mut Vec<Attempt>) {
    // Fork until refused: bounded in count and time; every child is killed after.
    let cap = setup.pids.map_or(2048, |p| p as usize + 64).min(4096);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kids = Vec::new();
    let mut refused = None;
    while kids.len() < cap && Instant::now() < deadline {
        // SAFETY: the child only sleeps until it is killed.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: waits for a signal; the parent kills it.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        if pid < 0 {
            refused = Some(errno());
            break;
        }
        kids.push(pid);
    }
    for k in &kids {
        // SAFETY: our own children.
        unsafe {
            libc::kill(*k, libc::SIGKILL);
            libc::waitpid(*k, std::ptr::null_mut(), 0);
        }
    }
    out.push(Attempt {
        family: "resources".into(),
        what: format!("a fork storm (up to {cap} processes)"),
        layer: "cgroup pids limit".into(),
        blocked: refused.is_some(),
        detail: match refused {
            Some(e) => format!("{} after {} processes", name(e), kids.len()),
            None => format!("{} processes started", kids.len()),
        },
    });
}

fn secrets(out: &mut Vec<Attempt>) {
    // Keys that look real in the environment (cordon's placeholders do not).
    const SHAPES: &[&str] = &[
        "sk-ant-api",
        "sk-proj-",
        "AKIA",
        "ghp_",
        "github_pat_",
        "xoxb-",
        "AIza",
    ];
    let found: Vec<String> = std::env::vars()
        .filter(|(_, v)| SHAPES.iter().any(|s| v.starts_with(s)) && !v.contains("cordon"))
        .map(|(k, _)| k)
        .collect();
    out.push(Attempt {
        family: "secrets".into(),
        what: "find real API keys in the environment".into(),
        layer: "environment filter, credential placeholders".into(),
        blocked: found.is_empty(),
        detail: if found.is_empty() {
            "none".into()
        } else {
            format!("found in {}", found.join(", "))
        },
    });
}

/// The files `cordon selftest` binds into its sandbox so the probe runs in any profile (one
/// that shows no C library, or lets nothing run from the workspace): cordon's own binary at
/// `policy::SELFTEST_PROBE`, and each shared object it has mapped at its own path — and the
/// dynamic loader also where the binary asks for it (`/lib64/…` on x86_64, a symlink on the
/// host that the sandbox may not have). Read from `/proc/self/maps`.
pub fn probe_files() -> std::io::Result<Vec<(std::path::PathBuf, std::path::PathBuf)>> {
    use std::path::{Path, PathBuf};
    let exe = std::fs::read_link("/proc/self/exe")?;
    let mut out = vec![(exe, PathBuf::from(crate::policy::SELFTEST_PROBE))];
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut libs: Vec<PathBuf> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .map(PathBuf::from)
        .collect();
    libs.sort();
    libs.dedup();
    for lib in &libs {
        if let Some(name) = lib.file_name().and_then(|n| n.to_str()) {
            let interp = Path::new("/lib64").join(name);
            if name.starts_with("ld-linux") && interp.exists() && &interp != lib {
                out.push((lib.clone(), interp));
            }
        }
        out.push((lib.clone(), lib.clone()));
    }
    // The loader asks for sonames (`libseccomp.so.2`): symlinks beside the files, found with
    // one pass over each directory that holds one of them.
    let mut dirs: Vec<&Path> = libs.iter().filter_map(|l| l.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        for e in std::fs::read_dir(dir)?.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_symlink()) {
                continue;
            }
            let link = e.path();
            if let Ok(target) = std::fs::canonicalize(&link) {
                if libs.contains(&target) {
                    out.push((target, link));
                }
            }
        }
    }
    Ok(out)
}
