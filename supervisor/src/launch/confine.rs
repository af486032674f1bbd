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
use nix::sys::resource::{setrlimit, Resource};
use std::path::Path;

/// The highest landlock ABI this build knows; the kernel may offer less (`doctor` says).
pub const LANDLOCK_ABI: ABI = ABI::V7;

/// The landlock ABI this kernel offers (0: none).
pub fn landlock_abi() -> i64 {
    crate::sys::landlock_abi_version().min(simulated_abi())
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
    nix::unistd::sethostname("cordon").map_err(|e| StepError::errno("uts: sethostname", e as i32, ""))?;
    if matches!(mode, NetworkMode::Loopback | NetworkMode::Proxy) {
        crate::sys::lo_up().map_err(|e| StepError::io("network: bring lo up", &e, ""))?;
    }
    Ok(())
}

pub fn rlimits(policy: &Policy) -> Result<(), StepError> {
    let set = |res: Resource, v: u64, what: &'static str| {
        setrlimit(res, v, v).map_err(|e| StepError::errno(what, e as i32, &v.to_string()))
    };
    if let Some(n) = policy.limits.open_files {
        set(
            Resource::RLIMIT_NOFILE,
            u64::from(n),
            "limits: open_files (RLIMIT_NOFILE)",
        )?;
    }
    if let Some(n) = policy.limits.file_size {
        set(Resource::RLIMIT_FSIZE, n, "limits: file_size (RLIMIT_FSIZE)")?;
    }
    // A crashing agent must not hand a core to the host's core_pattern helper.
    set(Resource::RLIMIT_CORE, 0, "limits: RLIMIT_CORE")
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
    if policy.request_dir.is_some() {
        // The request client: readable and executable, nothing else (the socket beside it
        // needs no landlock right to connect to).
        let client = Path::new(crate::policy::REQUESTS_INSIDE).join(crate::policy::REQUEST_CLIENT);
        add(&client, read | exec)?;
    }
    for (_, at) in &policy.probe_files {
        add(at, read | exec)?;
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

fn caps_err(step: &'static str) -> impl Fn(caps::errors::CapsError) -> StepError {
    move |e| StepError::msg(step, &e.to_string())
}

/// Drop every capability: bounding set first (needs CAP_SETPCAP, still effective), then
/// ambient, then the permitted/effective/inheritable sets. No setuid-root fix-ups later.
pub fn drop_capabilities() -> Result<(), StepError> {
    // Every capability this build knows by name…
    caps::clear(None, caps::CapSet::Bounding).map_err(caps_err("capabilities: drop bounding set"))?;
    // …and any the running kernel has beyond them (the caps crate's list ends at
    // CAP_CHECKPOINT_RESTORE): none may stay in the bounding set.
    let last_cap: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63);
    let known = caps::all()
        .iter()
        .map(|c| u32::from(c.index()))
        .max()
        .unwrap_or(0);
    for cap in known + 1..=last_cap {
        if let Err(e) = crate::sys::capbset_drop(cap) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(StepError::io(
                    "capabilities: drop bounding set",
                    &e,
                    &cap.to_string(),
                ));
            }
        }
    }
    caps::clear(None, caps::CapSet::Ambient).map_err(caps_err("capabilities: clear ambient"))?;
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
    crate::sys::set_securebits(bits).map_err(|e| StepError::io("capabilities: securebits", &e, ""))?;
    // Inheritable first, then permitted (which clears effective with it): every set empty.
    caps::clear(None, caps::CapSet::Inheritable).map_err(caps_err("capabilities: capset"))?;
    caps::clear(None, caps::CapSet::Permitted).map_err(caps_err("capabilities: capset"))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| StepError::errno("no_new_privs", e as i32, ""))?;
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
        let sc = crate::kernel::resolve(&rule.name)
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
    let fd = nix::sys::memfd::memfd_create(c"cordon-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// Load the compiled filter. ORDER: last before exec, so no setup step is filtered.
pub fn load_seccomp(bpf: &[u8]) -> Result<(), StepError> {
    crate::sys::seccomp_set_mode_filter(bpf).map_err(|e| match e.raw_os_error() {
        Some(libc::E2BIG) => StepError::msg("seccomp", "filter too long"),
        _ => StepError::io("seccomp: load filter", &e, ""),
    })
}
