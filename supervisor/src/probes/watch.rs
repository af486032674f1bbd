//! Watching one sandbox: claim a slot, give it a ring buffer and an egress policy, attach the
//! egress hooks to its cgroup, then (last) add its cgroup id to `SANDBOXES`, which is what
//! makes the probes record it. Undone in reverse on drop.
//!
//! Slots are claimed with an `flock` on `/run/cordon/slots/N`: the kernel releases the lock
//! when a `cordon` dies, however it dies, so a slot is never leaked. The file says "clean"
//! when its last owner zeroed the slot's counters on the way out; otherwise the next owner
//! zeroes them first. While held it says "in use INDEX". Slots below `FULL_SLOTS` are for
//! sandboxes that need the syscall tracepoints (`[monitor] visibility = "full"`), so the
//! lingerer (`super::release`, `super::linger`) detaches them `super::LINGER` after the last of
//! those ends. The file is rewritten in place, padded (`mark`).

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{MapData, PerCpuValues};
use aya::programs::{links::CgroupAttachMode, CgroupSkb, CgroupSockAddr};
use cordon_probe_common::{
    sbflag, NetPolicy, Sandbox, SlotCounts, Traffic, TrafficKey, FULL_SLOTS, MAX_SANDBOXES, MAX_SYSCALL,
    RING_BYTES, RING_BYTES_PROCESS, SANDBOX_TABLE, SANDBOX_WAYS,
};

use super::ring::Ring;
use super::{err, kerr, FileLock, ProbeError, Probes, STATE};

/// A sandbox's egress policy and the profile text of each rule (for events).
#[derive(Debug, Clone, Default)]
pub struct NetRules {
    pub policy: NetPolicy,
    pub texts: Vec<String>,
}

/// One watched sandbox. Dropping it stops the recording and frees the slot.
pub struct Watch {
    pub slot: u32,
    pub cgroup_id: u64,
    /// Where the sandbox sits in the `SANDBOXES` table.
    index: u32,
    pub ring: Ring,
    pub rules: NetRules,
    probes: Probes,
    /// Owns the cgroup links of the egress hooks: dropped, they detach.
    _egress: Vec<CgroupSockAddr>,
    /// Likewise for the traffic counters.
    _skb: Vec<CgroupSkb>,
    /// The slot's lock; taken on drop so the slot is free before `super::release`.
    lock: Option<FileLock>,
}

/// Claim a free slot of the class the sandbox needs: slots keep their rings, full-size ones
/// below `FULL_SLOTS`, small ones above (see `RING_BYTES_PROCESS`).
fn claim_slot(syscalls: bool) -> Result<(u32, FileLock), ProbeError> {
    let dir = Path::new(STATE).join("slots");
    std::fs::create_dir_all(&dir).map_err(|e| err("state directory", format!("{}: {e}", dir.display())))?;
    let class = if syscalls {
        0..FULL_SLOTS
    } else {
        FULL_SLOTS..MAX_SANDBOXES
    };
    let size = class.len();
    for slot in class {
        if let Some(lock) =
            FileLock::acquire(&dir.join(slot.to_string()), false).map_err(|e| err("slot lock", e))?
        {
            return Ok((slot, lock));
        }
    }
    Err(err(
        "slots",
        format!(
            "all {size} sandbox slots for visibility \"{}\" are in use on this host",
            if syscalls { "full" } else { "process" }
        ),
    ))
}

impl Watch {
    /// Start watching the sandbox in cgroup `cgroup_id` (directory `cgroup_dir`), whose pid
    /// namespace is `pidns` (device, inode).
    pub fn start(
        mut probes: Probes,
        cgroup_dir: impl AsFd,
        cgroup_id: u64,
        pidns: (u64, u64),
        rules: NetRules,
        syscalls: bool,
    ) -> Result<Self, ProbeError> {
        let (slot, lock) = claim_slot(syscalls)?;
        let mut state = String::new();
        let _ = lock.file().read_to_string(&mut state);
        // A dead owner ("in use INDEX") may have left its cgroup registered and its counters
        // dirty.
        if let Some(index) = state
            .trim()
            .strip_prefix("in use ")
            .and_then(|i| i.parse::<u32>().ok())
        {
            if probes.sandboxes.get(&index, 0).is_ok_and(|sb| sb.slot == slot) {
                let _ = probes.sandboxes.set(index, &Sandbox::default(), 0);
            }
        }
        if !state.is_empty() && state.trim() != "clean" {
            zero_slot(&mut probes, slot)?;
        }
        let index = (0..SANDBOX_WAYS)
            .map(|i| {
                u32::try_from(cgroup_id & u64::from(SANDBOX_TABLE - 1))
                    .unwrap_or(0)
                    .wrapping_add(i)
                    & (SANDBOX_TABLE - 1)
            })
            .find(|&i| probes.sandboxes.get(&i, 0).is_ok_and(|sb| sb.cgroup_id == 0))
            .ok_or_else(|| err("SANDBOXES", "no free entry for this cgroup id (table collision)"))?;
        // ORDER: marked before the tracepoints are attached (under the probes' lock), so a
        // sandbox ending meanwhile sees this one needs them and keeps them.
        mark(&lock, &format!("in use {index}"));

        crate::text::milestone("probes: slot claimed");
        let rings_dir = probes.pin_dir.join("rings");
        // The ring's data area is mapped window by window as records arrive (`Ring`): opening
        // it maps two pages, no longer worth a thread of its own (session 7 mapped its 4 MiB on
        // one). Nothing writes to it before the sandbox is registered below.
        let mut ring = map_ring(&rings_dir, slot)?;
        // Records a previous owner of the slot left unread (it was killed) are not ours.
        ring.skip_unread();
        crate::text::milestone("probes: ring mapped");
        // A slot's ring goes into RINGS once: replacing an entry waits for an RCU grace period.
        let rings = probes.rings.fd().as_fd();
        if crate::sys::map_of_maps_id(rings, slot)
            .map_err(|e| err("RINGS", e))?
            .is_none()
        {
            crate::sys::map_of_maps_set(rings, slot, ring.as_fd()).map_err(|e| err("RINGS", e))?;
        }
        crate::text::milestone("probes: ring registered");
        probes
            .net
            .set(slot, &rules.policy, 0)
            .map_err(|e| kerr("NET", &e))?;
        // ORDER: the egress hooks are attached before the agent is released, so its first
        // connect is already judged; a failure here stops the run (fail closed).
        let proxy = rules.policy.mode == cordon_probe_common::netmode::PROXY;
        crate::text::milestone("probes: egress policy set");
        let mut egress = probes.sock_addr_programs(proxy)?;
        if syscalls {
            probes.attach_syscalls()?;
        }
        for p in &mut egress {
            p.attach(&cgroup_dir, CgroupAttachMode::Single)
                .map_err(|e| kerr("egress hook (cgroup sock_addr attach)", &e))?;
        }
        crate::text::milestone("probes: egress hooks attached");
        clear_traffic(&mut probes, slot);
        let mut skb = probes.skb_programs()?;
        for (p, ty) in &mut skb {
            p.attach(&cgroup_dir, *ty, CgroupAttachMode::Single)
                .map_err(|e| kerr("traffic counter (cgroup skb attach)", &e))?;
        }
        crate::text::milestone("probes: traffic counters attached");
        let sandbox = Sandbox {
            cgroup_id,
            slot,
            flags: if syscalls { 0 } else { sbflag::NO_SYSCALLS },
            pidns_dev: pidns.0,
            pidns_ino: pidns.1,
        };
        probes
            .sandboxes
            .set(index, &sandbox, 0)
            .map_err(|e| kerr("SANDBOXES", &e))?;
        crate::text::milestone("probes: sandbox registered");
        Ok(Self {
            slot,
            cgroup_id,
            index,
            ring,
            rules,
            probes,
            _egress: egress,
            _skb: skb.into_iter().map(|(p, _)| p).collect(),
            lock: Some(lock),
        })
    }

    /// A handle that marks this sandbox `sbflag::QUIET` (see `Quieter`), for the session to
    /// keep while the pipeline owns the watch.
    pub fn quieter(&self) -> Result<Quieter, ProbeError> {
        Ok(Quieter {
            sandboxes: super::pinned_map(&self.probes.pin_dir, "SANDBOXES")?,
            index: self.index,
            cgroup_id: self.cgroup_id,
        })
    }

    /// Syscall counts since the start, by number (non-zero only), summed over CPUs: one
    /// lookup of the slot's per-CPU counter block.
    pub fn counts(&self) -> Vec<(u32, u64)> {
        let Ok(per_cpu) = self.probes.counts.get(&self.slot, 0) else {
            return Vec::new();
        };
        (0..MAX_SYSCALL)
            .filter_map(|nr| {
                let n: u64 = per_cpu.iter().map(|c| c.n[nr as usize]).sum();
                (n > 0).then_some((nr, n))
            })
            .collect()
    }

    /// Ask the probes to wake the reader with the slot's next record (`true`: the reader
    /// sleeps without a drain timer), or not (`false`: it drains on its timer).
    pub fn set_asleep(&mut self, asleep: bool) {
        let _ = self.probes.asleep.set(self.slot, &u32::from(asleep), 0);
    }

    /// Records the probes could not deliver (ring buffer full), summed over CPUs.
    pub fn drops(&self) -> u64 {
        self.probes
            .drops
            .get(&self.slot, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Bytes the sandbox wrote so far (write and its forms), summed over CPUs.
    pub fn written(&self) -> u64 {
        self.probes
            .written
            .get(&self.slot, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }

    /// Refuse every further connect and send to an address (and binds beyond loopback): the
    /// slot's egress policy becomes an empty allowlist. The hooks are attached to the
    /// sandbox's cgroup whatever its network mode, so this holds in its own namespace too.
    pub fn cut_egress(&mut self) -> Result<(), ProbeError> {
        let policy = NetPolicy {
            mode: cordon_probe_common::netmode::ALLOWLIST,
            count: 0,
            ..Default::default()
        };
        self.probes
            .net
            .set(self.slot, &policy, 0)
            .map_err(|e| kerr("NET map", &e))
    }

    /// Send the sandbox's egress to the supervisor's proxy (`netmode::PROXY`): from now on
    /// every TCP connect to a non-loopback IPv4 destination goes to the listener on
    /// `0.0.0.0:port` in the sandbox's network namespace, its destination encoded in the
    /// connection's addresses (`cordon_probe_common::proxy::decode` of the accepted socket's
    /// local and peer addresses gives it back); every UDP datagram to port 53 goes to
    /// `127.0.0.1:53` there, and its replies carry the server's address the agent asked for.
    /// Other egress is refused; loopback and binds are left alone. `port` 0 refuses all
    /// egress (the listener is not there yet).
    pub fn proxy(&mut self, port: u16) -> Result<(), ProbeError> {
        let policy = NetPolicy {
            mode: cordon_probe_common::netmode::PROXY,
            proxy_port: u32::from(port),
            ..Default::default()
        };
        self.probes
            .net
            .set(self.slot, &policy, 0)
            .map_err(|e| kerr("NET map", &e))
    }

    /// Bytes and packets per remote end (summed over CPUs), and the packets that could not be
    /// attributed to a remote.
    pub fn traffic(&self) -> (Vec<(TrafficKey, Traffic)>, u64) {
        let remotes = slot_traffic_keys(&self.probes, self.slot)
            .into_iter()
            .filter_map(|k| {
                let per_cpu = self.probes.traffic.get(&k, 0).ok()?;
                let t = per_cpu.iter().fold(Traffic::default(), |a, c| Traffic {
                    bytes_out: a.bytes_out + c.bytes_out,
                    packets_out: a.packets_out + c.packets_out,
                    bytes_in: a.bytes_in + c.bytes_in,
                    packets_in: a.packets_in + c.packets_in,
                });
                Some((k, t))
            })
            .collect();
        let untracked = self
            .probes
            .untracked
            .get(&self.slot, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0);
        (remotes, untracked)
    }

    /// How long this process spent loading the probes (None: already loaded).
    pub fn load_time(&self) -> Option<std::time::Duration> {
        self.probes.loaded_in
    }
}

/// The slot's ring buffer. Created and put in `RINGS` by the first sandbox that uses the slot,
/// pinned, and reused by later ones: replacing an entry of a map-of-maps waits for an RCU
/// grace period (~10 ms here, measured), which a launch must not pay.
/// The slot's ring buffer (pinned under `rings/`, made at its first use), mapped.
fn map_ring(dir: &std::path::Path, slot: u32) -> Result<Ring, ProbeError> {
    let pin = dir.join(slot.to_string());
    let data = match MapData::from_pin(&pin) {
        Ok(d) => d,
        Err(_) => {
            let d = MapData::create(
                aya_obj::Map::new_from_params(
                    aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
                    0,
                    0,
                    if slot < FULL_SLOTS {
                        RING_BYTES
                    } else {
                        RING_BYTES_PROCESS
                    },
                    0,
                ),
                "cordon_ring",
                None,
            )
            .map_err(|e| kerr("ring buffer", &e))?;
            std::fs::create_dir_all(dir).map_err(|e| err("bpffs", e))?;
            d.pin(&pin).map_err(|e| kerr("ring buffer pin", &e))?;
            d
        }
    };
    Ring::open(data).map_err(|e| err("ring buffer: mmap", e))
}

/// Bytes a slot file's state is padded to: rewritten in place, never truncated (on a disk
/// with online discard, truncating a file that holds a block waits for the discard: ~0.3 ms
/// of a launch on the reference VM, whose `/run` is not a tmpfs).
const MARK_BYTES: usize = 24;

fn mark(lock: &FileLock, state: &str) {
    use std::os::unix::fs::FileExt;
    let _ = lock
        .file()
        .write_all_at(format!("{state:<MARK_BYTES$}").as_bytes(), 0);
}

/// Clear a slot's counters: syscalls, ring drops, untracked packets.
fn zero_slot(probes: &mut Probes, slot: u32) -> Result<(), ProbeError> {
    probes.asleep.set(slot, &0, 0).map_err(|e| kerr("ASLEEP", &e))?;
    let cpus = nr_cpus()?;
    let counts = PerCpuValues::try_from(vec![SlotCounts::ZERO; cpus]).expect("one value per cpu");
    probes
        .counts
        .set(slot, counts, 0)
        .map_err(|e| kerr("COUNTS", &e))?;
    probes
        .drops
        .set(slot, per_cpu_count(cpus, 0), 0)
        .map_err(|e| kerr("DROPS", &e))?;
    probes
        .untracked
        .set(slot, per_cpu_count(cpus, 0), 0)
        .map_err(|e| kerr("UNTRACKED", &e))?;
    probes
        .written
        .set(slot, per_cpu_count(cpus, 0), 0)
        .map_err(|e| kerr("WRITTEN", &e))
}

fn nr_cpus() -> Result<usize, ProbeError> {
    Ok(aya::util::nr_cpus().map_err(|(_, e)| err("cpus", e))?.get() as usize)
}

/// A per-CPU counter's values: `n` on the first CPU, 0 on the others.
fn per_cpu_count(cpus: usize, n: u64) -> PerCpuValues<u64> {
    let mut v = vec![0u64; cpus];
    v[0] = n;
    PerCpuValues::try_from(v).expect("one value per cpu")
}

/// The `TRAFFIC` keys of one slot. The table is shared by all sandboxes of the host; a
/// sandbox has a handful of remotes, the whole table at most `TRAFFIC_ENTRIES`. A slot whose
/// `REMOTES` count is 0 has none, and the table is not walked: a walk visits every bucket,
/// ~0.1 ms when it is empty.
fn slot_traffic_keys(probes: &Probes, slot: u32) -> Vec<TrafficKey> {
    if remotes_added(probes, slot) == 0 {
        return Vec::new();
    }
    walk_traffic_keys(probes, slot)
}

fn walk_traffic_keys(probes: &Probes, slot: u32) -> Vec<TrafficKey> {
    probes
        .traffic
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.slot == slot)
        .collect()
}

/// Remotes the traffic hooks added to `TRAFFIC` for the slot since its count was last zeroed,
/// summed over CPUs; unreadable counts as some (the table is then walked).
fn remotes_added(probes: &Probes, slot: u32) -> u64 {
    probes
        .remotes
        .get(&slot, 0)
        .map(|v| v.iter().sum())
        .unwrap_or(u64::MAX)
}

/// Forget a slot's traffic (a previous owner's, or ours at the end).
fn clear_traffic(probes: &mut Probes, slot: u32) {
    if remotes_added(probes, slot) == 0 {
        return;
    }
    let cpus = nr_cpus().ok();
    // ORDER: the count is zeroed before the walk, so a remote the hooks add meanwhile is
    // either walked and removed or counted for the next owner's walk.
    let mut cleared = cpus.is_some_and(|c| probes.remotes.set(slot, per_cpu_count(c, 0), 0).is_ok());
    for k in walk_traffic_keys(probes, slot) {
        cleared &= probes.traffic.remove(&k).is_ok();
    }
    if let (false, Some(c)) = (cleared, cpus) {
        // Some are left: the next clear of the slot walks the table again.
        let _ = probes.remotes.set(slot, per_cpu_count(c, 1), 0);
    }
}

/// Marks one watched sandbox `sbflag::QUIET`: its agent ended and only its init is left, so
/// the probes record and count nothing more of it (egress is still judged).
pub struct Quieter {
    sandboxes: aya::maps::Array<MapData, Sandbox>,
    index: u32,
    cgroup_id: u64,
}

impl Quieter {
    pub fn quiet(&mut self) -> Result<(), ProbeError> {
        let mut sb = self
            .sandboxes
            .get(&self.index, 0)
            .map_err(|e| kerr("SANDBOXES", &e))?;
        if sb.cgroup_id != self.cgroup_id {
            return Err(err("SANDBOXES", "the sandbox's entry is gone"));
        }
        sb.flags |= sbflag::QUIET;
        self.sandboxes
            .set(self.index, &sb, 0)
            .map_err(|e| kerr("SANDBOXES", &e))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.probes.sandboxes.set(self.index, &Sandbox::default(), 0);
        clear_traffic(&mut self.probes, self.slot);
        let clean = zero_slot(&mut self.probes, self.slot).is_ok();
        if let Some(lock) = self.lock.take() {
            if clean {
                mark(&lock, "clean");
            }
        }
        super::release(&self.probes.pin_dir);
    }
}
