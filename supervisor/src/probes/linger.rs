//! The lingerer: one process per host and build that keeps the probes' attach points and
//! cordon's code warm between sandboxes, and detaches the host-wide syscall tracepoints when
//! no `full` sandbox needs them (`cordon probes linger`, started by a sandbox that ends when
//! none runs; `cordon probes cool` ends it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    err, lock_probes, pin_dir, skb_programs, slots_held, sock_addr_programs, FileLock, ProbeError, BPFFS,
    STATE, SYSCALL_TRACEPOINTS,
};

/// How long the lingerer keeps the probes' attach points warm after the last sandbox that
/// needs them ends: back-to-back launches (an agent's tool calls, each in its own sandbox)
/// then neither attach nor detach the syscall tracepoints (~1.3 ms of a launch) nor flip the
/// kernel's cgroup-BPF switches (below). Every process on the host pays the traced-syscall
/// path meanwhile (while a `full` sandbox ran).
pub const LINGER: Duration = Duration::from_secs(2);
/// How long the lingerer stays, by default, after the last sandbox gives up its slot
/// (`CORDON_KEEP_WARM`, whole seconds): an agent's tool calls come seconds to minutes apart,
/// and the first launch after a pause would otherwise pay the static keys' switch, the
/// lingerer's own start and, after a minute, cordon's binary read back from disk (this VM's
/// DAMON pages out what was not touched for 60 s: +13 ms). Meanwhile the cgroup hooks stay
/// on the keep cgroup (the host's sockets take the cgroup-BPF lookup, measured inside the
/// noise of a loopback send) and cordon's code stays locked in memory (`lock_own_code`);
/// the syscall tracepoints still go `LINGER` after the last `full` sandbox.
pub const KEEP_WARM: Duration = Duration::from_secs(600);
/// The variable that sets how long the lingerer stays (`keep_warm`).
pub const KEEP_WARM_ENV: &str = "CORDON_KEEP_WARM";

/// How long a lingerer started now stays after the last sandbox: `CORDON_KEEP_WARM` in whole
/// seconds (0: only `LINGER`, as the syscall tracepoints), else `KEEP_WARM`.
pub fn keep_warm() -> Result<Duration, String> {
    match std::env::var(KEEP_WARM_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(KEEP_WARM),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map(|s| Duration::from_secs(s).max(LINGER))
            .map_err(|_| format!("{KEEP_WARM_ENV}={v:?}: expected whole seconds (0: the probes cool down {} s after the last sandbox)", LINGER.as_secs())),
        Err(e) => Err(format!("{KEEP_WARM_ENV}: {e}")),
    }
}
/// How often the lingerer looks at the slots.
const LINGER_TICK: Duration = Duration::from_millis(250);

/// Called by every sandbox as it gives up its slot: unless a lingerer runs, start `cordon
/// probes linger`. If it cannot be started, the syscall tracepoints are detached at once when
/// no sandbox needs them. A `cordon` killed before it could leaves them attached until the
/// next one ends (or `cordon probes unload`).
pub(crate) fn release(pin_dir: &Path) {
    match FileLock::acquire(&linger_lock(pin_dir), false) {
        // One runs: it sees this slot free at its next look.
        Ok(None) => return,
        // ORDER: given up before the lingerer starts, which takes it.
        Ok(Some(free)) => drop(free),
        Err(_) => {}
    }
    use std::os::unix::process::CommandExt;
    let started = std::env::current_exe().and_then(|exe| {
        let mut cmd = std::process::Command::new(exe);
        // Spawned by a sandbox's recording thread: the lingerer starts at cordon's own nice.
        crate::sys::at_base_nice(&mut cmd);
        cmd.args(["probes", "linger", "--hold"])
            .arg(keep_warm().unwrap_or(KEEP_WARM).as_secs().to_string())
            .arg(pin_dir)
            // It lives for minutes: none of the run's environment (an agent's API keys) with it.
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    if started.is_err() {
        detach_syscalls_if_idle(pin_dir);
    }
}

/// The lingerer's lock: one per build (each build's tracepoints are its own).
fn linger_lock(pins: &Path) -> PathBuf {
    let id = pins
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new(STATE).join(format!("linger-{id}.lock"))
}

/// `cordon probes linger`: one at a time per build. It keeps every cgroup hook attached to
/// `keep` (an empty cgroup of its own, where they never run) while any sandbox holds a slot
/// and for `hold` after the last gives it up: attaching the first program of a type to any
/// cgroup, and detaching the last, switches the kernel's cgroup-BPF static key, whose text
/// patching stops every CPU (perf: ~4% of a launch's CPU, the IPIs' wait on the launch path);
/// held here, a sandbox's own attach and detach only count. For as long, cordon's code stays
/// locked in memory (`lock_own_code`). It detaches the syscall tracepoints `LINGER` after the
/// last `full` sandbox ends. It ends early on SIGTERM, SIGINT or SIGHUP (`cordon probes
/// cool`) and when its build's pins are gone (`cordon probes unload`, a newer build). The
/// links it holds go when it ends, however it ends.
pub fn linger(
    pins: &Path,
    keep: Option<std::os::fd::BorrowedFd<'_>>,
    hold: Duration,
) -> Result<(), ProbeError> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;
    let cordon = Path::new(BPFFS).join("cordon");
    if pins.parent() != Some(cordon.as_path()) {
        return Err(err(
            "linger",
            format!("{} is not a pin directory of cordon's", pins.display()),
        ));
    }
    let hold = hold.max(LINGER);
    // Asked to end: the signals arrive through a descriptor the tick waits on.
    let mut stop = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(sig);
    }
    stop.thread_block().map_err(|e| err("linger: block signals", e))?;
    let stop = SignalFd::with_flags(&stop, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| err("linger: signalfd", e))?;
    let lock_path = linger_lock(pins);
    let Ok(Some(mut lock)) = FileLock::acquire(&lock_path, false) else {
        return Ok(());
    };
    let say_who = |lock: &FileLock| {
        use std::os::unix::fs::FileExt;
        // Rewritten in place (never truncated: see `watch::mark`), read by `lingerer` and `cool`.
        let line = format!("{} {}", std::process::id(), hold.as_secs());
        let _ = lock.file().write_all_at(format!("{line:<31}\n").as_bytes(), 0);
    };
    say_who(&lock);
    // The links live as long as these programs (dropped when the lingerer ends). A hook that
    // cannot be held only costs the next launch its switch: the tracepoints' detach, the
    // lingerer's real duty, goes on regardless.
    let mut _warm = (Vec::new(), Vec::new());
    if let (Some(cg), Ok(mut addr), Ok(mut skb)) = (keep, sock_addr_programs(pins, true), skb_programs(pins))
    {
        for p in &mut addr {
            let _ = p.attach(cg, aya::programs::CgroupAttachMode::Single);
        }
        for (p, ty) in &mut skb {
            let _ = p.attach(cg, *ty, aya::programs::CgroupAttachMode::Single);
        }
        _warm = (addr, skb);
    }
    if hold > LINGER {
        lock_own_code();
    }
    let attached = || pins.join("links").join(SYSCALL_TRACEPOINTS[0].0).exists();
    let asked_to_stop = || {
        let mut fds = [nix::poll::PollFd::new(stop.as_fd(), nix::poll::PollFlags::POLLIN)];
        let tick = u16::try_from(LINGER_TICK.as_millis()).unwrap_or(u16::MAX);
        matches!(nix::poll::poll(&mut fds, tick), Ok(n) if n > 0)
    };
    let (mut full_seen, mut any_seen) = (Instant::now(), Instant::now());
    loop {
        if asked_to_stop() || !pins.exists() {
            break;
        }
        let (full, any) = slots_held();
        let now = Instant::now();
        if full {
            full_seen = now;
        } else if now.duration_since(full_seen) >= LINGER && attached() {
            detach_syscalls_if_idle(pins);
        }
        if any {
            any_seen = now;
            continue;
        }
        if now.duration_since(any_seen) < hold {
            continue;
        }
        // ORDER: the lock is given up before the last look: a sandbox ending after it starts a
        // lingerer of its own, which must be able to take it; one that claimed a slot before
        // it is seen here, and this lingerer goes on if it can take the lock back.
        drop(lock);
        if !slots_held().1 {
            break;
        }
        match FileLock::acquire(&lock_path, false) {
            Ok(Some(again)) => {
                lock = again;
                say_who(&lock);
                any_seen = Instant::now();
            }
            _ => return Ok(()),
        }
    }
    detach_syscalls_if_idle(pins);
    Ok(())
}

/// Lock this process's code and read-only data (the cordon binary's mappings that are not
/// writable) in memory, so the page cache keeps them for the next launch: after a minute
/// untouched, this VM's DAMON pages a file's pages out and a launch reads cordon back from
/// disk (+13 ms measured). Returns the bytes locked; a refusal (RLIMIT_MEMLOCK, memory) only
/// costs that read.
fn lock_own_code() -> usize {
    let (Ok(exe), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return 0;
    };
    let exe = exe.to_string_lossy();
    let mut locked = 0;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms), Some(path)) = (f.next(), f.next(), f.nth(3)) else {
            continue;
        };
        if perms.contains('w') || path != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-').and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        }) else {
            continue;
        };
        if crate::sys::mlock(start, end.saturating_sub(start)).is_ok() {
            locked += end - start;
        }
    }
    locked
}

/// The lingerer of this build that runs now, as `cordon doctor` reports it.
pub struct Lingerer {
    pub pid: u32,
    /// How long it stays after the last sandbox.
    pub hold: Duration,
    /// Memory it keeps locked (cordon's code), in KiB.
    pub locked_kib: u64,
}

/// Whether a lingerer of this build runs now (its lock is held), and what it said of itself.
pub fn lingerer() -> Option<Lingerer> {
    lingerer_at(&linger_lock(&pin_dir()))
}

/// The lingerer whose lock is `lock`, from the pid it wrote there (the lock itself is not
/// taken: a lingerer starting that moment would find it held and leave).
fn lingerer_at(lock: &Path) -> Option<Lingerer> {
    let text = std::fs::read_to_string(lock).ok()?;
    let mut f = text.split_whitespace();
    let pid: u32 = f.next()?.parse().ok()?;
    let hold = Duration::from_secs(f.next()?.parse().ok()?);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if !cmdline.windows(14).any(|w| w == b"probes\0linger\0") {
        return None;
    }
    let locked_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Some(Lingerer {
        pid,
        hold,
        locked_kib,
    })
}

/// `cordon probes cool`: end every build's lingerer now (SIGTERM; it lets go of the hooks,
/// detaches the tracepoints if no sandbox needs them, removes its cgroup), and wait up to 5 s
/// for each to be gone. Returns their pids. A sandbox ending later starts a new one.
pub fn cool() -> Result<Vec<u32>, ProbeError> {
    let Ok(dir) = std::fs::read_dir(STATE) else {
        return Ok(Vec::new());
    };
    let mut stopped = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("linger-") && name.ends_with(".lock")) {
            continue;
        }
        let Some(l) = lingerer_at(&e.path()) else {
            continue;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(l.pid).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(|e| err("cool", format!("signal the lingerer (pid {}): {e}", l.pid)))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && lingerer_at(&e.path()).is_some_and(|now| now.pid == l.pid) {
            std::thread::sleep(Duration::from_millis(20));
        }
        stopped.push(l.pid);
    }
    Ok(stopped)
}

/// Detach the syscall tracepoints when no sandbox needs them.
fn detach_syscalls_if_idle(pin_dir: &Path) {
    let Ok(_lock) = lock_probes() else { return };
    if slots_held().0 {
        return;
    }
    for (prog, _) in SYSCALL_TRACEPOINTS {
        let _ = std::fs::remove_file(pin_dir.join("links").join(prog));
    }
}
