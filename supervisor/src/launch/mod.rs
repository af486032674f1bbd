//! The launch sequence. The parent's steps are in `run`, top to bottom; the child's are in
//! `child::setup`. docs in README.md ("How a run is built") list the same steps in order.

mod cgroup;
mod channel;
mod child;
mod confine;
pub mod desk;
pub mod mounts;
mod overlay;
mod pty;
mod supervise;
mod terminal;

pub use cgroup::{detect_layout, Cgroup, Layout};
pub use confine::{compile_seccomp, landlock_abi, landlock_reliance, LANDLOCK_ABI};

use crate::policy::Policy;
use crate::profile::NetworkMode;
use crate::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// A failed step, named so the user knows which layer could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub step: String,
    pub errno: i32,
    pub detail: String,
}

impl StepError {
    pub fn errno(step: &str, errno: i32, detail: &str) -> Self {
        StepError {
            step: step.into(),
            errno,
            detail: detail.into(),
        }
    }
    pub fn io(step: &str, e: &io::Error, detail: &str) -> Self {
        Self::errno(
            step,
            e.raw_os_error().unwrap_or(0),
            &if detail.is_empty() {
                e.to_string()
            } else {
                format!("{detail}: {e}")
            },
        )
    }
    pub fn msg(step: &str, detail: &str) -> Self {
        Self::errno(step, 0, detail)
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}", self.step)?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if self.errno != 0 && !self.detail.contains("os error") {
            write!(f, " ({})", io::Error::from_raw_os_error(self.errno))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot apply layer {0}; no agent was started")]
    Step(StepError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Seccomp(#[from] confine::SeccompError),
    /// The observer (the session: probes, trace, monitor) could not attach to the sandbox.
    #[error("{0}; no agent was started")]
    Observer(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("command not found: {0} (searched PATH={1})")]
    NotFound(String, String),
    #[error("{0}")]
    Argument(String),
}

impl From<StepError> for LaunchError {
    fn from(e: StepError) -> Self {
        LaunchError::Step(e)
    }
}

/// The sandbox as its observer sees it between clone and release: it exists, in its cgroup and
/// namespaces, and nothing of the agent has run yet.
pub struct Sandbox<'a> {
    pub id: &'a str,
    /// The sandbox's init, as the host sees it.
    pub pid: libc::pid_t,
    /// The sandbox's cgroup2 directory (freeze, kill, the probes' cgroup id) and an fd of it.
    pub cgroup: &'a Path,
    pub cgroup_fd: &'a std::os::fd::OwnedFd,
}

/// What watches the sandbox (the session). Launch calls it once, between clone and release:
/// ORDER: before release, so the agent's first syscall is already recorded and its first
/// connect already judged. An error stops the launch; the sandbox is killed unreleased.
pub trait Observer {
    fn attach(&mut self, sandbox: &Sandbox<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// The agent ended and only the sandbox's init is left (cordon's own code, exiting): stop
    /// recording the sandbox, so that what was recorded so far is all there is and the run can
    /// end while init's namespaces are torn down. False: it cannot, and the launch waits for
    /// init to be gone before it returns (the default: an observer that records must say it
    /// stopped).
    fn quiet(&mut self) -> bool {
        false
    }
}

/// Watches nothing (tests of the launch sequence alone).
pub struct Unobserved;

impl Observer for Unobserved {
    fn attach(&mut self, _: &Sandbox<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }

    fn quiet(&mut self) -> bool {
        true
    }
}

pub struct Options {
    pub sandbox_id: String,
    pub command: Vec<String>,
    /// Give the agent its own pty (decided by the caller from whether stdio is a terminal).
    pub interactive: bool,
    /// Transactional workspace: the directory holding the overlay's `upper` and `work`
    /// (`workspace::Layer::layer_dir`). The workspace bind becomes an overlay over it.
    pub layer: Option<std::path::PathBuf>,
    /// Interactive runs: questions the approval broker asks on the user's terminal.
    pub desk: Option<std::sync::Arc<desk::Desk>>,
}

/// How the run ended, for the CLI to report and turn into an exit status.
#[derive(Debug)]
pub struct Outcome {
    pub exit_code: i32,
    /// Plain-words notes: limits hit, wall clock, signals.
    pub notes: Vec<String>,
    /// The sandbox's init, still exiting when the run ended early (see `Observer::quiet`), and
    /// its cgroups: dropping it reaps init and removes them.
    pub teardown: Option<Teardown>,
}

/// What is left of a sandbox whose agent ended: init on its way out (nothing else runs) and
/// the cgroups. Dropping it waits for init and removes the cgroups.
#[derive(Debug)]
pub struct Teardown {
    pid: libc::pid_t,
    _pidfd: std::os::fd::OwnedFd,
    _cgroup: cgroup::Cgroup,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        // init exits by itself once it has reported; the cgroups go after it (field order).
        let _ = sys::waitpid(self.pid, false);
    }
}

/// Find the program the way execvp would, among the host paths the sandbox will see (binds
/// are mounted at the same absolute paths). Relative paths start in the workspace.
pub fn resolve_program(cmd: &str, env_path: Option<&str>, policy: &Policy) -> Result<PathBuf, LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    let visible = |p: &Path| policy.binds.iter().any(|b| p.starts_with(&b.path));
    let is_exec = |p: &Path| {
        visible(p)
            && p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.contains('/') {
        let p = policy.context.workspace.join(cmd);
        // The selftest's probe: a file bound in at a path of its own.
        if policy.probe_files.iter().any(|(_, at)| at == &p) {
            return Ok(p);
        }
        return if p.exists() && visible(&p) {
            Ok(p)
        } else {
            Err(LaunchError::NotFound(
                cmd.into(),
                "(a path: not present in the sandbox)".into(),
            ))
        };
    }
    let path = env_path.unwrap_or("/usr/local/bin:/usr/bin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(cmd))
        .find(|p| is_exec(p))
        .ok_or_else(|| LaunchError::NotFound(cmd.into(), path.into()))
}

fn cstring(s: &str) -> Result<CString, LaunchError> {
    CString::new(s).map_err(|_| LaunchError::Argument(format!("argument contains a NUL byte: {s:?}")))
}

/// Protected paths that do not exist at start cannot be mounted read-only; the agent could
/// create them. They are checked after the run.
fn absent_protected(policy: &Policy) -> Vec<PathBuf> {
    policy
        .protected
        .iter()
        .filter(|p| std::fs::symlink_metadata(p).is_err())
        .cloned()
        .collect()
}

/// Warnings for protected paths the agent created with live content (git's `*.sample` hooks
/// from `git init` are not live).
fn created_protected(absent: &[PathBuf]) -> Vec<String> {
    let live = |p: &Path| -> bool {
        match std::fs::symlink_metadata(p) {
            Err(_) => false,
            Ok(m) if m.is_dir() => std::fs::read_dir(p).is_ok_and(|mut entries| {
                entries.any(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".sample")))
            }),
            Ok(_) => true,
        }
    };
    absent
        .iter()
        .filter(|p| live(p))
        .map(|p| {
            format!(
                "WARNING: the agent created {}, a path the profile protects (it can run code outside the sandbox: git hooks/config, editor tasks, .envrc). Inspect it before you use this workspace.",
                p.display()
            )
        })
        .collect()
}

const MEMFD_NOEXEC: &str = "/proc/sys/vm/memfd_noexec";

/// `vm.memfd_noexec = 2` in the sandbox's pid namespace: a memfd is never executable (one
/// created without flags is sealed non-executable, `MFD_EXEC` is refused with EACCES), so
/// the agent cannot run a program it wrote to memory, which landlock does not see. The
/// setting holds for the namespace and its descendants, and no process in it can lower it.
/// Started on a thread in `scope`: the caller attaches the observer meanwhile.
fn memfd_noexec<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    pid: i32,
) -> Result<Written<'scope>, StepError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/pid")).map_err(|e| memfd_step(&e))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(MEMFD_NOEXEC)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StepError::io(
                    "memfd: vm.memfd_noexec",
                    &e,
                    "this kernel has no vm.memfd_noexec (Linux 6.3+): executable memfds cannot be refused",
                )
            } else {
                memfd_step(&e)
            }
        })?;
    Ok(Written(sys::write_sysctl_in_pid_ns(scope, ns.into(), file, b"2")))
}

/// The sysctl being written on its own thread: `wait` for the outcome.
struct Written<'scope>(std::thread::ScopedJoinHandle<'scope, io::Result<()>>);

impl Written<'_> {
    fn wait(self) -> Result<(), StepError> {
        self.0
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the sysctl writer thread panicked")))
            .map_err(|e| memfd_step(&e))
    }
}

fn memfd_step(e: &io::Error) -> StepError {
    StepError::io("memfd: vm.memfd_noexec", e, MEMFD_NOEXEC)
}

fn is_ignored(sig: libc::c_int) -> bool {
    // SAFETY: zeroed sigaction is a valid out buffer; a null new action only queries.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN }
}

const NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP;

/// Run one agent under `policy`, watched by `observer`. Blocks until the sandbox is gone.
pub fn run(policy: &Policy, opts: Options, observer: &mut dyn Observer) -> Result<Outcome, LaunchError> {
    prepare(policy, opts)?.start(observer)
}

/// A sandbox made ready but not started: refused if it cannot be enforced, its seccomp
/// filter compiled, its cgroups made and its mount trees detached. Nothing runs in it yet, so
/// it may be prepared while the trace is still being written; dropping it removes what it made.
pub struct Prepared<'p> {
    policy: &'p Policy,
    opts: Options,
    /// The program, its argv and environment, as the agent's execve takes them.
    exec: sys::Exec,
    /// Protected paths absent at the start (see `created_protected`).
    absent: Vec<PathBuf>,
    /// The seccomp filter, the cgroups, the detached mount trees.
    made: (Vec<u8>, cgroup::Cgroup, Vec<mounts::Tree>),
}

/// Steps 1–4 of a launch (see `Prepared`).
pub fn prepare(policy: &Policy, opts: Options) -> Result<Prepared<'_>, LaunchError> {
    crate::text::milestone("launch: preparing");
    // 1. Refuse what cannot be enforced, before anything is created: the kernel must offer
    // every landlock right this policy relies on; say which one is missing rather than run
    // weaker.
    confine::landlock_supported(policy)?;
    crate::text::milestone("launch: landlock checked");
    if std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|v| v.trim() == "0") {
        return Err(StepError::msg(
            "namespaces",
            "user namespaces are disabled on this host (user.max_user_namespaces = 0)",
        )
        .into());
    }
    let program = resolve_program(
        &opts.command[0],
        policy.env.get("PATH").map(String::as_str),
        policy,
    )?;
    crate::text::milestone("launch: program found");
    let argv = opts
        .command
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = policy
        .env
        .iter()
        .map(|(k, v)| cstring(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let program = cstring(&program.to_string_lossy())?;

    let absent = absent_protected(policy);
    crate::text::milestone("launch: checked (landlock, program, protected paths)");
    // 2. Compile the seccomp filter here (the child only loads it), on a thread: libseccomp's
    //    ~0.3 ms of CPU overlap the kernel work of steps 3 and 4. Its error comes first.
    let made = std::thread::scope(|s| -> Result<_, LaunchError> {
        let compiling = s.spawn(|| confine::compile_seccomp(policy));
        let made = (|| -> Result<_, LaunchError> {
            // 3. cgroups beneath our own, with the profile's limits.
            let cgroup = cgroup::Cgroup::create(&opts.sandbox_id, &policy.limits)?;
            crate::text::milestone("launch: cgroups made");
            // 4. Detached bind trees, idmapped where the invoking user's files must look like
            //    the agent's.
            let idmap_ns = match (&policy.idmap_uid_map, &policy.idmap_gid_map) {
                (Some(u), Some(g)) => Some(mounts::idmap_userns(u, g)?),
                _ => None,
            };
            let trees = mounts::prepare(policy, idmap_ns.as_ref(), opts.layer.as_deref())?;
            crate::text::milestone("launch: mount trees prepared");
            Ok((cgroup, trees))
        })();
        let bpf = compiling
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        let (cgroup, trees) = made?;
        Ok((bpf, cgroup, trees))
    })?;
    Ok(Prepared {
        policy,
        opts,
        exec: sys::Exec::new(program, argv, envp),
        absent,
        made,
    })
}

impl Prepared<'_> {
    /// The questions desk of an interactive run, known only once the trace exists.
    pub fn set_desk(&mut self, desk: Option<std::sync::Arc<desk::Desk>>) {
        self.opts.desk = desk;
    }

    /// Steps 5–10: start the sandbox, watched by `observer`; block until it is gone.
    pub fn start(self, observer: &mut dyn Observer) -> Result<Outcome, LaunchError> {
        let Prepared {
            policy,
            opts,
            exec,
            absent,
            made: (seccomp_bpf, cgroup, trees),
        } = self;
        // 5. Signals arrive through a signalfd in the supervisor; the child inherits them blocked.
        // A signal cordon's caller ignores (`nohup cordon run …`) is not forwarded either.
        let ignored: Vec<libc::c_int> = child::FORWARDED
            .iter()
            .copied()
            .filter(|s| is_ignored(*s))
            .collect();
        let _blocked = supervise::BlockedSignals::block(child::signal_set(&[libc::SIGCHLD]));
        let (parent_ch, child_ch) =
            channel::pair().map_err(|e| StepError::io("handshake: socketpair", &e, ""))?;
        let cg_fd = cgroup.v2_dir_fd()?;
        let v1_join = cgroup.v1_join_fds()?;

        // 6. clone3 into new namespaces, directly into the sandbox's cgroup2 leaf.
        // With an allowlist the sandbox shares the host's network; the egress hooks on its cgroup
        // decide every connect, sendmsg and bind.
        let namespaces = match policy.network.mode {
            NetworkMode::Allowlist => NAMESPACES & !libc::CLONE_NEWNET,
            _ => NAMESPACES,
        };
        let forked = sys::clone3(namespaces as u64, Some(cg_fd.as_raw_fd()))
            .map_err(|e| StepError::io("namespaces: clone3", &e, ""))?;
        let (pid, pidfd) = match forked {
            sys::Forked::Child => {
                drop(parent_ch);
                let plan = child::ChildPlan {
                    policy,
                    trees: &trees,
                    seccomp_bpf: &seccomp_bpf,
                    exec: &exec,
                    interactive: opts.interactive,
                    v1_join: &v1_join,
                    // init closes these once the root is built: the sandbox keeps no host handles.
                    close_after_root: trees
                        .iter()
                        .map(|t| t.fd.as_raw_fd())
                        .chain(std::iter::once(cg_fd.as_raw_fd()))
                        .collect(),
                };
                child::main(&child_ch, &plan)
            }
            sys::Forked::Parent { pid, pidfd } => (pid, pidfd),
        };
        drop(child_ch);
        drop(trees);
        let guard = supervise::KillOnDrop(&pidfd);

        crate::text::milestone("launch: cloned");
        // 7. Identity maps (inside 1000 -> the agent's unprivileged host ids), release: the child
        //    builds the sandbox (root, landlock, seccomp) while we watch it, then waits for `Go`.
        let release = || -> Result<(), StepError> {
            let write_maps = || -> io::Result<()> {
                std::fs::write(format!("/proc/{pid}/uid_map"), &policy.uid_map)?;
                std::fs::write(format!("/proc/{pid}/gid_map"), &policy.gid_map)
            };
            write_maps().map_err(|e| StepError::io("identity: uid/gid maps", &e, ""))?;
            parent_ch
                .send(&channel::Msg::Release)
                .map_err(|e| StepError::io("handshake: release", &e, ""))
        };
        let released = release().map_err(LaunchError::from);
        crate::text::milestone("launch: released");
        // 8. Executable memfds refused in the sandbox's pid namespace (on a thread), and the
        //    observer watches the sandbox (probes, trace, monitor, proxy), while the child builds
        //    its root. ORDER: both before `Go`, so the agent's first memfd is already refused, its
        //    first syscall already recorded and its first connect already judged.
        let started = released
            .and_then(|()| {
                std::thread::scope(|s| {
                    let memfd = memfd_noexec(s, pid)?;
                    let attached = observer
                        .attach(&Sandbox {
                            id: &opts.sandbox_id,
                            pid,
                            cgroup: &cgroup.v2,
                            cgroup_fd: &cg_fd,
                        })
                        .map_err(LaunchError::Observer);
                    memfd.wait().map_err(LaunchError::from).and(attached)
                })
            })
            .and_then(|()| {
                crate::text::milestone("launch: observer attached");
                parent_ch
                    .send(&channel::Msg::Go)
                    .map_err(|e| StepError::io("handshake: start", &e, "").into())
            });
        if let Err(e) = started {
            // The child may have failed first (it joins the v1 cgroups before waiting for us, and
            // builds the sandbox while we attach): its own report names the real cause. Kill it so
            // the channel closes, then read.
            let _ = sys::pidfd_send_signal(&pidfd, libc::SIGKILL);
            let first = loop {
                match parent_ch.recv() {
                    Ok(Some(channel::Msg::SetupFailed { step, errno, detail })) => {
                        break StepError { step, errno, detail }.into();
                    }
                    // A terminal the child opened before it failed: not the cause.
                    Ok(Some(channel::Msg::PtyMaster)) => continue,
                    _ => break e,
                }
            };
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            return Err(first);
        }
        drop(v1_join);

        // 9. Supervise until the sandbox is gone (or only init is left, exiting).
        let outcome = supervise::run(supervise::Running {
            pid,
            pidfd: &pidfd,
            channel: &parent_ch,
            cgroup: &cgroup,
            interactive: opts.interactive,
            wall_clock_ms: policy.limits.wall_clock_ms,
            ignored: &ignored,
            terminal: &policy.terminal,
            desk: opts.desk.as_deref(),
            quiet: &mut || observer.quiet(),
        });
        std::mem::forget(guard);
        let (mut outcome, init_left) = outcome?;
        // 10. The sandbox is gone: what it hit and what it left.
        outcome.notes.extend(cgroup.limit_reports(&policy.limits));
        outcome.notes.extend(created_protected(&absent));
        if init_left {
            outcome.teardown = Some(Teardown {
                pid,
                _pidfd: pidfd,
                _cgroup: cgroup,
            });
        }
        Ok(outcome)
    }
}
