//! The layers applied in the child after its root is built: hostname and loopback, resource
//! rlimits, landlock, capabilities and seccomp — in that order (see `child::setup`).

use super::StepError;
use crate::policy::syscalls::{Action, When};
use crate::policy::{Access, Policy};
use crate::profile::NetworkMode;
use landlock::{
    Access as _, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use std::path::Path;

/// The highest landlock ABI this build knows; the kernel may offer less (`doctor` says).
pub const LANDLOCK_ABI: ABI = ABI::V7;

/// The landlock ABI this kernel offers (0: none).
pub fn landlock_abi() -> i64 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: querying the ABI version with null attr and size 0 is the documented use; it
    // reads and writes no memory.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    abi.min(simulated_abi())
}

/// Tests simulate an older kernel with `CORDON_TEST_LANDLOCK_ABI=N` (debug builds only; it
/// can only lower the ABI cordon believes it has, so a run is refused or built with fewer
/// best-effort extras, never given more).
fn simulated_abi() -> i64 {
    if cfg!(debug_assertions) {
        if let Some(n) = std::env::var("CORDON_TEST_LANDLOCK_ABI")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            return n;
        }
    }
    i64::MAX
}

/// A landlock right this policy relies on (no other layer covers it), and the ABI that
/// brought it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reliance {
    pub right: &'static str,
    pub abi: i64,
    pub why: &'static str,
}

/// What this policy needs from landlock. Rights other layers already cover (TCP with an empty
/// network namespace, signals with a pid namespace, truncation of read-only mounts) are
/// applied where the kernel has them but are not required.
pub fn landlock_reliance(policy: &Policy) -> Vec<Reliance> {
    let mut need = vec![Reliance {
        right: "filesystem access (read, write, execute)",
        abi: 1,
        why: "it decides which places the agent may write and run programs from",
    }];
    if policy.network.mode == NetworkMode::Allowlist {
        need.push(Reliance {
            right: "the abstract-unix-socket scope",
            abi: 6,
            why: "the sandbox shares the host's network namespace, where abstract sockets of host services (D-Bus, X11, systemd) would otherwise be reachable",
        });
    }
    need
}

/// Refuse a policy relying on a landlock right this kernel lacks; name the right and the ABI.
pub fn landlock_supported(policy: &Policy) -> Result<(), StepError> {
    let have = landlock_abi();
    for r in landlock_reliance(policy) {
        if have < r.abi {
            let offered = if have < 1 {
                "this kernel offers no landlock (not built in, or not enabled at boot: add landlock to the `lsm=` kernel parameter)".to_string()
            } else {
                format!("this kernel offers landlock ABI {have}")
            };
            return Err(StepError::msg(
                "landlock",
                &format!(
                    "the profile relies on {} (landlock ABI {}) because {}; {offered}",
                    r.right, r.abi, r.why
                ),
            ));
        }
    }
    Ok(())
}

pub fn hostname_and_loopback(mode: NetworkMode) -> Result<(), StepError> {
    let name = b"cordon";
    // SAFETY: name is a valid buffer of the given length.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
        return Err(StepError::errno("uts: sethostname", super::sys::last_errno(), ""));
    }
    if mode == NetworkMode::Loopback {
        lo_up().map_err(|e| StepError::io("network: bring lo up", &e, ""))?;
    }
    Ok(())
}

fn lo_up() -> std::io::Result<()> {
    // SAFETY: plain socket creation.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: zeroed ifreq is valid; we fill in the name and flags.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_UP | libc::IFF_RUNNING).unwrap_or(1);
    // SAFETY: s is a valid socket, req a valid ifreq.
    let r = unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing our socket.
    unsafe { libc::close(s) };
    if r < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

pub fn rlimits(policy: &Policy) -> Result<(), StepError> {
    let set = |res: libc::__rlimit_resource_t, v: u64, what: &'static str| {
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: lim is a valid rlimit.
        if unsafe { libc::setrlimit(res, &lim) } < 0 {
            return Err(StepError::errno(what, super::sys::last_errno(), &v.to_string()));
        }
        Ok(())
    };
    if let Some(n) = policy.limits.open_files {
        set(
            libc::RLIMIT_NOFILE,
            u64::from(n),
            "limits: open_files (RLIMIT_NOFILE)",
        )?;
    }
    if let Some(n) = policy.limits.file_size {
        set(libc::RLIMIT_FSIZE, n, "limits: file_size (RLIMIT_FSIZE)")?;
    }
    // A crashing agent must not hand a core to the host's core_pattern helper.
    set(libc::RLIMIT_CORE, 0, "limits: RLIMIT_CORE")
}

/// Landlock at the best ABI the kernel offers. Fails closed if the kernel enforces nothing.
pub fn landlock(policy: &Policy) -> Result<(), StepError> {
    let err = |e: &dyn std::fmt::Display| StepError::msg("landlock", &e.to_string());
    // Best effort up to the ABI the kernel offers (lowered in tests that simulate an older
    // one); what the policy relies on was checked by `landlock_supported` before clone.
    let abi = match landlock_abi() {
        a if a >= 7 => LANDLOCK_ABI,
        6 => ABI::V6,
        5 => ABI::V5,
        4 => ABI::V4,
        3 => ABI::V3,
        2 => ABI::V2,
        _ => ABI::V1,
    };
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi) & !AccessFs::Execute;
    let exec = AccessFs::Execute;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(|e| err(&e))?;
    if policy.network.mode == NetworkMode::None {
        // With no network, TCP bind/connect are denied outright (UDP is covered by the empty
        // network namespace).
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| err(&e))?;
    }
    let mut created = ruleset
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(|e| err(&e))?
        .create()
        .map_err(|e| err(&e))?;
    let mut add = |path: &Path, access: landlock::BitFlags<AccessFs>| -> Result<(), StepError> {
        let fd = match PathFd::new(path) {
            Ok(fd) => fd,
            // A path that is not in the sandbox's view needs no rule.
            Err(_) if !path.exists() => return Ok(()),
            Err(e) => return Err(err(&e)),
        };
        (&mut created)
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| err(&e))?;
        Ok(())
    };
    add(Path::new("/"), AccessFs::ReadDir.into())?;
    for b in &policy.binds {
        let mut a = match b.access {
            Access::ReadOnly => read,
            Access::ReadWrite => all & !exec,
        };
        if b.exec {
            a |= exec;
        }
        add(&b.path, a)?;
    }
    for e in &policy.exec_only {
        add(e, read | exec)?;
    }
    add(Path::new("/tmp"), all & !exec)?;
    add(Path::new("/dev"), read | AccessFs::WriteFile | AccessFs::IoctlDev)?;
    add(
        Path::new("/dev/pts"),
        read | AccessFs::WriteFile | AccessFs::IoctlDev,
    )?;
    add(Path::new("/dev/shm"), all & !exec)?;
    add(Path::new("/proc"), read | AccessFs::WriteFile)?;
    let status = created.restrict_self().map_err(|e| err(&e))?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(StepError::msg(
            "landlock",
            "the kernel enforces no landlock rules (not built in or not enabled at boot: add `lsm=...,landlock` to the kernel command line)",
        ));
    }
    Ok(())
}

/// Drop every capability: bounding set first (needs CAP_SETPCAP, still effective), then
/// ambient, then the permitted/effective/inheritable sets. No setuid-root fix-ups later.
pub fn drop_capabilities() -> Result<(), StepError> {
    let last_cap: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    for cap in 0..=last_cap {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0
            && super::sys::last_errno() != libc::EINVAL
        {
            return Err(StepError::errno(
                "capabilities: drop bounding set",
                super::sys::last_errno(),
                &cap.to_string(),
            ));
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) } < 0 {
        return Err(StepError::errno(
            "capabilities: clear ambient",
            super::sys::last_errno(),
            "",
        ));
    }
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    let bits = SECBIT_NOROOT
        | SECBIT_NOROOT_LOCKED
        | SECBIT_NO_SETUID_FIXUP
        | SECBIT_NO_SETUID_FIXUP_LOCKED
        | SECBIT_KEEP_CAPS_LOCKED;
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) } < 0 {
        return Err(StepError::errno(
            "capabilities: securebits",
            super::sys::last_errno(),
            "",
        ));
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset with a v3 header and two data words, all zero.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) } < 0 {
        return Err(StepError::errno(
            "capabilities: capset",
            super::sys::last_errno(),
            "",
        ));
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(StepError::errno("no_new_privs", super::sys::last_errno(), ""));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("seccomp: {0}")]
pub struct SeccompError(String);

/// Compile the policy's syscall rules to classic BPF, in the parent. The child only loads it.
pub fn compile_seccomp(policy: &Policy) -> Result<Vec<u8>, SeccompError> {
    let e = |what: &str, err: libseccomp::error::SeccompError| SeccompError(format!("{what}: {err}"));
    let mut ctx = ScmpFilterContext::new(ScmpAction::Allow).map_err(|x| e("new filter", x))?;
    // Only the native ABI: i386 (`int 0x80`) and x32 syscalls kill the process.
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .map_err(|x| e("bad-arch action", x))?;
    ctx.set_ctl_nnp(true).map_err(|x| e("no_new_privs", x))?;
    // A binary tree of syscall numbers instead of a linear chain: syscalls whose rules read
    // arguments (openat, ioctl, clone, chmod…) run the filter on every call, so its depth
    // matters; the rest are answered by the kernel's per-filter allow cache.
    ctx.set_ctl_optimize(2).map_err(|x| e("optimize", x))?;
    for rule in &policy.seccomp {
        let sc = crate::policy::syscalls::resolve(&rule.name)
            .ok_or_else(|| SeccompError(format!("unknown syscall {}", rule.name)))?;
        let action = match rule.action {
            Action::Errno(n) => ScmpAction::Errno(n),
            Action::KillProcess => ScmpAction::KillProcess,
        };
        let res = match rule.when {
            When::Always => ctx.add_rule_exact(action, sc),
            When::ArgMasked { index, mask, value } => ctx.add_rule_conditional_exact(
                action,
                sc,
                &[ScmpArgCompare::new(
                    index,
                    ScmpCompareOp::MaskedEqual(mask),
                    value,
                )],
            ),
            When::Both(conds) => ctx.add_rule_conditional_exact(
                action,
                sc,
                &conds.map(|(index, mask, value)| {
                    ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(mask), value)
                }),
            ),
        };
        res.map_err(|x| e(&format!("rule for {}", rule.name), x))?;
    }
    let mut file = tempfile_in_memory().map_err(|x| SeccompError(format!("memfd: {x}")))?;
    ctx.export_bpf(&file).map_err(|x| e("export", x))?;
    use std::io::{Read, Seek};
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|x| SeccompError(format!("read back: {x}")))?;
    Ok(bpf)
}

fn tempfile_in_memory() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid name; we take ownership of the new fd.
    let fd = unsafe { libc::memfd_create(c"cordon-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is new and ours.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Load the compiled filter. ORDER: last before exec, so no setup step is filtered.
pub fn load_seccomp(bpf: &[u8]) -> Result<(), StepError> {
    let len = u16::try_from(bpf.len() / std::mem::size_of::<libc::sock_filter>())
        .map_err(|_| StepError::msg("seccomp", "filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prog points at `len` sock_filter instructions produced by libseccomp.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(StepError::errno(
            "seccomp: load filter",
            super::sys::last_errno(),
            "",
        ));
    }
    Ok(())
}
