//! The eBPF probes: loaded once per host and kept in bpffs, shared by every `cordon run`.
//!
//! Loading and verifying the programs costs ~100 ms or more; a sandbox must start in a few. So
//! the first `cordon` on a host loads them, attaches the tracepoints and pins programs, links
//! and maps under `/sys/fs/bpf/cordon/<build>/`; every later `cordon` of the same build only
//! opens the pins. Each sandbox then claims a slot (see `watch`), which gives it its own ring
//! buffer inside the shared `RINGS` map-of-maps, so every `cordon` reads only its own
//! sandbox's records and no daemon is needed.

mod btf;
mod linger;
mod ring;
mod watch;

pub(crate) use linger::release;
pub use linger::{cool, keep_warm, linger, lingerer, Lingerer, KEEP_WARM, KEEP_WARM_ENV, LINGER};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aya::maps::{Array, Map, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::{
    CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, CgroupSockAddrAttachType, RawTracePoint,
};
use aya::{Ebpf, EbpfLoader};
use cordon_probe_common::{KernelOffsets, NetPolicy, Sandbox, SlotCounts, Traffic, TrafficKey};

pub use watch::{NetRules, Quieter, Watch};

/// The compiled programs, embedded at build time (see build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cordon-probes"));

const BPFFS: &str = "/sys/fs/bpf";
const STATE: &str = "/run/cordon";
/// Attached while at least one sandbox is watched (see `Probes::attach_syscalls`): a program
/// on `sys_enter`/`sys_exit` puts every task on the host on the kernel's slow syscall path
/// (measured: +57 ns per syscall for every process), which an idle host must not pay.
const SYSCALL_TRACEPOINTS: [(&str, &str); 2] = [("sys_enter", "sys_enter"), ("sys_exit", "sys_exit")];
/// Attached for as long as the probes are loaded: they run only on fork, exec and exit.
const PROC_TRACEPOINTS: [(&str, &str); 3] = [
    ("sched_fork", "sched_process_fork"),
    ("sched_exec", "sched_process_exec"),
    ("sched_exit", "sched_process_exit"),
];
/// The egress hooks, attached to each sandbox's cgroup. recvmsg and getpeername only rewrite
/// addresses, for `netmode::PROXY` (replies and peers look like what the agent asked for).
const SOCK_ADDR: [(&str, CgroupSockAddrAttachType); 10] = [
    ("connect4", CgroupSockAddrAttachType::Connect4),
    ("connect6", CgroupSockAddrAttachType::Connect6),
    ("sendmsg4", CgroupSockAddrAttachType::UDPSendMsg4),
    ("sendmsg6", CgroupSockAddrAttachType::UDPSendMsg6),
    ("bind4", CgroupSockAddrAttachType::Bind4),
    ("bind6", CgroupSockAddrAttachType::Bind6),
    ("recvmsg4", CgroupSockAddrAttachType::UDPRecvMsg4),
    ("recvmsg6", CgroupSockAddrAttachType::UDPRecvMsg6),
    ("getpeername4", CgroupSockAddrAttachType::GetPeerName4),
    ("getpeername6", CgroupSockAddrAttachType::GetPeerName6),
];
/// Attached only to `proxy` sandboxes (see `Probes::sock_addr_programs`).
const PROXY_ONLY: [&str; 4] = ["recvmsg4", "recvmsg6", "getpeername4", "getpeername6"];
const SKB: [(&str, CgroupSkbAttachType); 2] = [
    ("skb_egress", CgroupSkbAttachType::Egress),
    ("skb_ingress", CgroupSkbAttachType::Ingress),
];
const MAPS: [&str; 11] = [
    "SANDBOXES",
    "ASLEEP",
    "RINGS",
    "COUNTS",
    "DROPS",
    "NET",
    "OFFSETS",
    "TRAFFIC",
    "UNTRACKED",
    "REMOTES",
    "WRITTEN",
];

/// Why the probes could not be made ready, naming the kernel feature involved.
#[derive(Debug, thiserror::Error)]
#[error("eBPF probes: {what}: {detail}")]
pub struct ProbeError {
    pub what: String,
    pub detail: String,
}

fn err(what: &str, detail: impl std::fmt::Display) -> ProbeError {
    ProbeError {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// An error from the kernel, with its causes and, where the errno says which, the kernel
/// feature or permission that is missing.
pub(crate) fn kerr(what: &str, e: &(dyn std::error::Error + 'static)) -> ProbeError {
    let mut detail = e.to_string();
    let mut errno = None;
    let mut cause = e.source();
    while let Some(c) = cause {
        if !detail.contains(&c.to_string()) {
            detail.push_str(&format!(": {c}"));
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            errno = io.raw_os_error();
        }
        cause = c.source();
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        errno = errno.or(io.raw_os_error());
    }
    let hint = match errno {
        Some(libc::ENOSYS) => " — this kernel has no bpf() system call (built without CONFIG_BPF_SYSCALL)",
        Some(libc::EPERM) => {
            " — the kernel refused bpf(): it needs CAP_BPF with CAP_PERFMON or CAP_SYS_ADMIN, and lockdown or a security module can forbid it"
        }
        Some(libc::EINVAL | libc::EOPNOTSUPP) => " — this kernel does not support this program, map or attach type",
        _ => "",
    };
    err(what, format!("{detail}{hint}"))
}

/// Handles on the shared, pinned probe set.
pub struct Probes {
    pub(crate) sandboxes: Array<MapData, Sandbox>,
    /// `RINGS`, a map of maps: each slot's ring (`sys::map_of_maps_id`, `sys::map_of_maps_set`).
    pub(crate) rings: MapData,
    pub(crate) counts: PerCpuArray<MapData, SlotCounts>,
    pub(crate) drops: PerCpuArray<MapData, u64>,
    pub(crate) net: Array<MapData, NetPolicy>,
    pub(crate) asleep: Array<MapData, u32>,
    pub(crate) traffic: PerCpuHashMap<MapData, TrafficKey, Traffic>,
    pub(crate) untracked: PerCpuArray<MapData, u64>,
    /// Remotes added to `traffic` per slot (see `watch::slot_traffic_keys`).
    pub(crate) remotes: PerCpuArray<MapData, u64>,
    pub(crate) written: PerCpuArray<MapData, u64>,
    pub(crate) pin_dir: PathBuf,
    /// How long this process spent loading the programs (None: they were already loaded).
    pub loaded_in: Option<Duration>,
}

/// Directory of this build's pins: a hash of the object, so a rebuilt cordon never reuses
/// programs or map layouts of another build.
fn pin_dir() -> PathBuf {
    Path::new(BPFFS).join("cordon").join(OBJECT_ID)
}

/// The first 8 bytes of the object's sha256, in hex (build.rs).
const OBJECT_ID: &str = include_str!(concat!(env!("OUT_DIR"), "/cordon-probes.id"));

fn ensure_bpffs() -> Result<(), ProbeError> {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    if statfs(BPFFS).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC) {
        return Ok(());
    }
    crate::sys::mount("bpf", Path::new(BPFFS), "bpf", nix::mount::MsFlags::empty(), "")
        .map_err(|e| err("bpffs", format!("mount at {BPFFS}: {e}")))
}

/// An exclusive `flock` held until drop.
pub(crate) struct FileLock(std::fs::File);

impl FileLock {
    pub(crate) fn acquire(path: &Path, block: bool) -> std::io::Result<Option<Self>> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        // std's file locks are flock(2) on Linux: released by the kernel when the holder dies.
        if block {
            f.lock()?;
        } else {
            match f.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(Some(Self(f)))
    }

    pub(crate) fn file(&self) -> &std::fs::File {
        &self.0
    }
}

impl Probes {
    /// Open this build's pinned probes, loading and pinning them first if no `cordon` has yet.
    pub fn ready() -> Result<Self, ProbeError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(STATE).map_err(|e| err("state directory", format!("{STATE}: {e}")))?;
        let _lock = lock_probes()?;
        let dir = pin_dir();
        let complete = dir
            .join("links")
            .join(PROC_TRACEPOINTS[PROC_TRACEPOINTS.len() - 1].0)
            .exists();
        let loaded_in = if complete {
            None
        } else {
            let started = Instant::now();
            let _ = std::fs::remove_dir_all(&dir);
            load_and_pin(&dir)?;
            remove_other_builds(&dir);
            Some(started.elapsed())
        };
        Ok(Self {
            sandboxes: pinned_map(&dir, "SANDBOXES")?,
            rings: MapData::from_pin(dir.join("maps").join("RINGS")).map_err(|e| kerr("RINGS", &e))?,
            counts: pinned_map(&dir, "COUNTS")?,
            drops: pinned_map(&dir, "DROPS")?,
            net: pinned_map(&dir, "NET")?,
            asleep: pinned_map(&dir, "ASLEEP")?,
            traffic: pinned_map(&dir, "TRAFFIC")?,
            untracked: pinned_map(&dir, "UNTRACKED")?,
            remotes: pinned_map(&dir, "REMOTES")?,
            written: pinned_map(&dir, "WRITTEN")?,
            pin_dir: dir,
            loaded_in,
        })
    }

    /// The egress programs, opened from their pins, ready to attach to one sandbox's cgroup.
    /// The reply-side hooks (recvmsg, getpeername) only matter when the proxy rewrites
    /// destinations: every attach costs launch time, so other sandboxes go without them.
    pub(crate) fn sock_addr_programs(&self, proxy: bool) -> Result<Vec<CgroupSockAddr>, ProbeError> {
        sock_addr_programs(&self.pin_dir, proxy)
    }

    /// The traffic counters, opened from their pins, ready to attach to one sandbox's cgroup.
    pub(crate) fn skb_programs(&self) -> Result<Vec<(CgroupSkb, CgroupSkbAttachType)>, ProbeError> {
        skb_programs(&self.pin_dir)
    }

    /// Attach the syscall tracepoints unless another sandbox already has. Called by a sandbox
    /// holding its slot, so a concurrent `detach_syscalls_if_idle` (a lingerer) sees it and keeps them.
    pub(crate) fn attach_syscalls(&self) -> Result<(), ProbeError> {
        let _lock = lock_probes()?;
        for (prog, tracepoint) in SYSCALL_TRACEPOINTS {
            let pin = self.pin_dir.join("links").join(prog);
            if pin.exists() {
                continue;
            }
            let mut p =
                RawTracePoint::from_pin(self.pin_dir.join("progs").join(prog)).map_err(|e| kerr(prog, &e))?;
            pin_raw_tracepoint(&mut p, prog, tracepoint, &pin)?;
        }
        Ok(())
    }

    /// Unpin everything of this build (`cordon probes unload`): the tracepoints detach.
    pub fn unload() -> Result<bool, ProbeError> {
        let dir = pin_dir();
        if !dir.exists() {
            return Ok(false);
        }
        std::fs::remove_dir_all(&dir).map_err(|e| err("unpin", format!("{}: {e}", dir.display())))?;
        Ok(true)
    }
}

/// One program of the probe set as `cordon doctor` reports it.
pub struct Hook {
    pub program: &'static str,
    /// Where it runs: the tracepoint or the cgroup attach point.
    pub hook: String,
    /// Its pin exists (loaded and verified by this kernel).
    pub loaded: bool,
    /// Attached now, in words.
    pub attached: &'static str,
}

impl Probes {
    /// Every program of this build's probe set, read from its pins: loaded or not, attached
    /// or not (the syscall tracepoints only while a sandbox is watched; the cgroup hooks to
    /// each sandbox's own cgroup).
    pub fn hooks(&self) -> Vec<Hook> {
        let pinned = |sub: &str, prog: &str| self.pin_dir.join(sub).join(prog).exists();
        let mut out = Vec::new();
        for (prog, tp) in PROC_TRACEPOINTS {
            out.push(Hook {
                program: prog,
                hook: format!("tracepoint {tp}"),
                loaded: pinned("progs", prog) || pinned("links", prog),
                attached: if pinned("links", prog) {
                    "attached"
                } else {
                    "NOT attached"
                },
            });
        }
        for (prog, tp) in SYSCALL_TRACEPOINTS {
            out.push(Hook {
                program: prog,
                hook: format!("raw tracepoint {tp}"),
                loaded: pinned("progs", prog),
                attached: if pinned("links", prog) {
                    "attached (a sandbox with visibility \"full\" is watched or ended less than 2 s ago; meanwhile every process on the host takes the traced syscall path: +235 ns per getppid on the reference VM, `sudo benches/syscall_cost.sh` measures this host)"
                } else {
                    "detached (attached only while a sandbox with visibility \"full\" is watched and for 2 s after the last ends; then every process on the host takes the traced syscall path: +235 ns per getppid on the reference VM, `sudo benches/syscall_cost.sh` measures this host)"
                },
            });
        }
        let cgroup_hooks = SOCK_ADDR
            .iter()
            .map(|(prog, ty)| (*prog, format!("cgroup sock_addr {ty:?}")))
            .chain(SKB.iter().map(|(prog, ty)| (*prog, format!("cgroup skb {ty:?}"))));
        for (prog, hook) in cgroup_hooks {
            out.push(Hook {
                program: prog,
                hook,
                loaded: pinned("progs", prog),
                attached: if PROXY_ONLY.contains(&prog) {
                    "attached to each proxy sandbox's cgroup"
                } else {
                    "attached to each sandbox's cgroup"
                },
            });
        }
        out
    }

    /// Where this build's probe set is pinned.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }
}

/// Serialises loading, attaching and detaching between `cordon` processes.
fn lock_probes() -> Result<FileLock, ProbeError> {
    std::fs::create_dir_all(STATE).map_err(|e| err("state directory", format!("{STATE}: {e}")))?;
    Ok(FileLock::acquire(&Path::new(STATE).join("probes.lock"), true)
        .map_err(|e| err("lock", e))?
        .expect("blocking lock"))
}

fn sock_addr_programs(pins: &Path, proxy: bool) -> Result<Vec<CgroupSockAddr>, ProbeError> {
    SOCK_ADDR
        .iter()
        .filter(|(name, _)| proxy || !PROXY_ONLY.contains(name))
        .map(|(name, ty)| {
            CgroupSockAddr::from_pin(pins.join("progs").join(name), *ty).map_err(|e| kerr(name, &e))
        })
        .collect()
}

fn skb_programs(pins: &Path) -> Result<Vec<(CgroupSkb, CgroupSkbAttachType)>, ProbeError> {
    SKB.iter()
        .map(|(name, ty)| {
            let p = CgroupSkb::from_pin(pins.join("progs").join(name), *ty).map_err(|e| kerr(name, &e))?;
            Ok((p, *ty))
        })
        .collect()
}

/// Open one of this build's pinned maps as its typed form.
fn pinned_map<T: TryFrom<Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> Result<T, ProbeError> {
    let data = MapData::from_pin(dir.join("maps").join(name)).map_err(|e| kerr(name, &e))?;
    Map::from_map_data(data)
        .and_then(T::try_from)
        .map_err(|e| kerr(name, &e))
}

fn load_and_pin(dir: &Path) -> Result<(), ProbeError> {
    for sub in ["maps", "progs", "links"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| err("bpffs", format!("{}: {e}", dir.display())))?;
    }
    let offsets = btf::kernel_offsets().map_err(|e| err("BTF", e))?;
    let mut ebpf: Ebpf = EbpfLoader::new()
        .load(OBJECT)
        .map_err(|e| kerr("load (maps and BTF)", &e))?;
    let mut off: Array<&mut MapData, KernelOffsets> = ebpf
        .map_mut("OFFSETS")
        .ok_or_else(|| err("OFFSETS", "missing from the object"))?
        .try_into()
        .map_err(|e| kerr("OFFSETS", &e))?;
    off.set(0, &offsets, 0).map_err(|e| kerr("OFFSETS", &e))?;
    for name in MAPS {
        let m = ebpf
            .map(name)
            .ok_or_else(|| err(name, "missing from the object"))?;
        m.pin(dir.join("maps").join(name)).map_err(|e| kerr(name, &e))?;
    }
    for (prog, _) in SOCK_ADDR {
        let p: &mut CgroupSockAddr = program(&mut ebpf, prog)?;
        p.load()
            .map_err(|e| err(&format!("{prog} (cgroup sock_addr hook)"), verifier(e)))?;
        p.pin(dir.join("progs").join(prog)).map_err(|e| kerr(prog, &e))?;
    }
    for (prog, ty) in SKB {
        let p: &mut CgroupSkb = program(&mut ebpf, prog)?;
        p.load()
            .map_err(|e| err(&format!("{prog} (cgroup skb {ty:?} hook)"), verifier(e)))?;
        p.pin(dir.join("progs").join(prog)).map_err(|e| kerr(prog, &e))?;
    }
    for (prog, _) in SYSCALL_TRACEPOINTS {
        load_raw_tracepoint(&mut ebpf, prog)?
            .pin(dir.join("progs").join(prog))
            .map_err(|e| kerr(prog, &e))?;
    }
    // The process tracepoints' links last: the last link's pin marks the set complete (see
    // `ready`).
    for (prog, tracepoint) in PROC_TRACEPOINTS {
        let p = load_raw_tracepoint(&mut ebpf, prog)?;
        pin_raw_tracepoint(p, prog, tracepoint, &dir.join("links").join(prog))?;
    }
    Ok(())
}

/// A program of the object, as its typed form.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| err(name, "missing from the object"))?
        .try_into()
        .map_err(|e| kerr(name, &e))
}

fn load_raw_tracepoint<'a>(ebpf: &'a mut Ebpf, prog: &str) -> Result<&'a mut RawTracePoint, ProbeError> {
    let p: &mut RawTracePoint = program(ebpf, prog)?;
    p.load()
        .map_err(|e| err(&format!("{prog} (raw tracepoint)"), verifier(e)))?;
    Ok(p)
}

/// Attach a loaded raw tracepoint program and pin its link: the pin keeps it attached.
fn pin_raw_tracepoint(
    p: &mut RawTracePoint,
    prog: &str,
    tracepoint: &str,
    pin: &Path,
) -> Result<(), ProbeError> {
    let id = p
        .attach(tracepoint)
        .map_err(|e| kerr(&format!("raw tracepoint {tracepoint}"), &e))?;
    let link: aya::programs::links::FdLink = p.take_link(id).map_err(|e| kerr(prog, &e))?.into();
    link.pin(pin).map_err(|e| kerr(prog, &e))?;
    Ok(())
}

/// The verifier's log is long; keep its end, which names the rejected instruction.
fn verifier(e: aya::programs::ProgramError) -> String {
    let s = format!("{e:#}");
    if s.len() > 2000 {
        format!("…{}", &s[s.len() - 2000..])
    } else {
        s
    }
}

/// Whether running `cordon`s hold slots: (one needing the syscall tracepoints, any).
fn slots_held() -> (bool, bool) {
    let Ok(dir) = std::fs::read_dir(Path::new(STATE).join("slots")) else {
        return (false, false);
    };
    let (mut full, mut any) = (false, false);
    for e in dir.flatten() {
        let Some(slot) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let needs_syscalls = slot < cordon_probe_common::FULL_SLOTS;
        // A process slot held tells nothing more once one is known held.
        if (any && !needs_syscalls) || !matches!(FileLock::acquire(&e.path(), false), Ok(None)) {
            continue;
        }
        any = true;
        if needs_syscalls {
            full = true;
            break;
        }
    }
    (full, any)
}

/// Builds of cordon other than this one left pins behind; remove those no sandbox uses.
fn remove_other_builds(current: &Path) {
    let Ok(entries) = std::fs::read_dir(Path::new(BPFFS).join("cordon")) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path == current {
            continue;
        }
        // A cordon of that build may still be running: keep its pins while any slot is held.
        if !slots_held().1 {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The probes' form of a profile's egress allowlist, with each rule's text for events.
pub fn net_rules(net: &crate::policy::NetworkPolicy) -> NetRules {
    use cordon_probe_common::{netmode, NetRule, MAX_NET_RULES};
    let mut r = NetRules::default();
    if net.mode == crate::profile::NetworkMode::Proxy {
        // Every egress refused until the session's proxy listens (`Watch::proxy`).
        r.policy.mode = netmode::PROXY;
        r.policy.proxy_port = 0;
        return r;
    }
    if net.mode != crate::profile::NetworkMode::Allowlist {
        r.policy.mode = netmode::OWN_NAMESPACE;
        return r;
    }
    r.policy.mode = netmode::ALLOWLIST;
    for (i, d) in net.allow.iter().take(MAX_NET_RULES).enumerate() {
        let (family, addr) = match d.addr {
            std::net::IpAddr::V4(a) => (4, [u32::from_ne_bytes(a.octets()), 0, 0, 0]),
            std::net::IpAddr::V6(a) => {
                let o = a.octets();
                let w = |k: usize| u32::from_ne_bytes([o[k], o[k + 1], o[k + 2], o[k + 3]]);
                (6, [w(0), w(4), w(8), w(12)])
            }
        };
        r.policy.rules[i] = NetRule {
            family,
            protocol: d.protocol.map_or(0, u32::from),
            port: u32::from(d.port),
            prefix_len: u32::from(d.prefix),
            addr,
        };
        r.texts.push(d.to_string());
    }
    r.policy.count = u32::try_from(r.texts.len()).unwrap_or(0);
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pin_directory_is_named_by_the_embedded_objects_hash() {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(super::OBJECT);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::OBJECT_ID, hex);
        assert!(super::pin_dir().ends_with(&hex));
    }
}
