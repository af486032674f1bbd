//! Maps and helpers every program uses.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    btf_maps::{Array, ArrayOfMaps, PerCpuArray, PerCpuHashMap, RingBuf, SkStorage},
    helpers::bpf_get_current_pid_tgid,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_ns_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_ringbuf_query,
    },
    macros::btf_map,
};
use cordon_probe_common::{
    sbflag, DnsOrigin, Header, KernelOffsets, NetPolicy, Sandbox, SlotCounts, SyscallRecord, Traffic,
    TrafficKey, MAX_SANDBOXES, MAX_SYSCALL, RING_BYTES, SANDBOX_TABLE, SANDBOX_WAYS, TRAFFIC_ENTRIES,
};

/// Watched sandboxes, found by cgroup2 id (see `SANDBOX_TABLE`). Written by the supervisor
/// before the agent starts.
#[btf_map]
pub static SANDBOXES: Array<Sandbox, { SANDBOX_TABLE as usize }> = Array::new();

/// One ring buffer per slot, created by the supervisor that owns the slot, so each `cordon`
/// process reads only its own sandbox's records.
#[btf_map]
pub static RINGS: ArrayOfMaps<RingBuf<SyscallRecord, { RING_BYTES as usize }>, { MAX_SANDBOXES as usize }> =
    ArrayOfMaps::new();

/// Syscall counts per slot, one copy per CPU (no atomics needed).
#[btf_map]
pub static COUNTS: PerCpuArray<SlotCounts, { MAX_SANDBOXES as usize }> = PerCpuArray::new();

/// Records lost because a slot's ring buffer was full, per slot and CPU.
#[btf_map]
pub static DROPS: PerCpuArray<u64, { MAX_SANDBOXES as usize }> = PerCpuArray::new();

/// Bytes the slot's processes wrote with write(2) and its vectored and positional forms, per
/// slot and CPU (the `written` monitor rule).
#[btf_map]
pub static WRITTEN: PerCpuArray<u64, { MAX_SANDBOXES as usize }> = PerCpuArray::new();

/// Per slot: 1 while the slot's reader sleeps (its sandbox was quiet) and wants the next
/// record to wake it; the first record after that clears it and wakes the reader, later ones
/// do not (the reader drains on its timer again until it is quiet).
#[btf_map]
pub static ASLEEP: Array<u32, { MAX_SANDBOXES as usize }> = Array::new();

/// Egress policy per slot.
#[btf_map]
pub static NET: Array<NetPolicy, { MAX_SANDBOXES as usize }> = Array::new();

/// Bytes and packets per remote address, port and protocol, per slot, one copy per CPU.
#[btf_map]
pub static TRAFFIC: PerCpuHashMap<TrafficKey, Traffic, { TRAFFIC_ENTRIES as usize }> = PerCpuHashMap::new();

/// Packets of a slot whose remote could not be added to `TRAFFIC` (the table was full).
#[btf_map]
pub static UNTRACKED: PerCpuArray<u64, { MAX_SANDBOXES as usize }> = PerCpuArray::new();

/// Remotes added to `TRAFFIC` for a slot (counted on the CPU that added each): 0 tells the
/// supervisor the slot has no entries there, so it need not walk the whole table (a walk of
/// the empty 16,384-bucket table was ~0.1 ms, three of them in every launch).
#[btf_map]
pub static REMOTES: PerCpuArray<u64, { MAX_SANDBOXES as usize }> = PerCpuArray::new();

/// The DNS server a redirected UDP socket last asked (`netmode::PROXY`), stored with the
/// socket itself (freed with it; no table one sandbox could fill for the others): the recvmsg
/// and getpeername hooks give replies from the DNS socket that source. `ip4` 0: none.
#[btf_map]
pub static DNS_ORIGINS: SkStorage<DnsOrigin> = SkStorage::new();

/// Kernel struct offsets found in BTF by the loader (index 0).
#[btf_map]
pub static OFFSETS: Array<KernelOffsets, 1> = Array::new();

/// The watched sandbox the current task belongs to, if any.
#[inline(always)]
pub fn current_sandbox() -> Option<&'static Sandbox> {
    // SAFETY: helper without arguments.
    sandbox_of(unsafe { bpf_get_current_cgroup_id() })
}

/// The watched sandbox whose cgroup2 id is `cgroup`, if any.
#[inline(always)]
pub fn sandbox_of(cgroup: u64) -> Option<&'static Sandbox> {
    let base = cgroup as u32;
    for i in 0..SANDBOX_WAYS {
        if let Some(sb) = SANDBOXES.get(base.wrapping_add(i) & (SANDBOX_TABLE - 1)) {
            if sb.cgroup_id == cgroup {
                return Some(sb);
            }
        }
    }
    None
}

#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(n) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while preemption is off in BPF.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
pub fn count_written(slot: u32, bytes: u64) {
    if let Some(n) = WRITTEN.get_ptr_mut(slot) {
        // SAFETY: a per-CPU map value: only this CPU writes it, and BPF programs run with preemption (and migration) off, so no other writer races this increment.
        unsafe { *n += bytes };
    }
}

#[inline(always)]
pub fn count_syscall(slot: u32, nr: u32) {
    let bucket = if nr < MAX_SYSCALL { nr } else { MAX_SYSCALL - 1 };
    if let Some(c) = COUNTS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU map value that only this CPU writes, with preemption off in BPF; `get_mut` keeps the bucket index inside the array.
        unsafe {
            if let Some(n) = (*c).n.get_mut(bucket as usize) {
                *n += 1;
            }
        }
    }
}

/// The sandbox's ring buffer; none once it is `sbflag::QUIET` (nothing more is recorded).
#[inline(always)]
pub fn ring(sandbox: &Sandbox) -> Option<&'static RingBuf<SyscallRecord, { RING_BYTES as usize }>> {
    if sandbox.flags & sbflag::QUIET != 0 {
        return None;
    }
    RINGS.get(sandbox.slot)
}

#[inline(always)]
pub fn header(kind: u32, sandbox: &Sandbox) -> Header {
    let ids = bpf_get_current_pid_tgid();
    let mut ns = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `ns` is a valid out-buffer of the size passed.
    let found = unsafe {
        bpf_get_ns_current_pid_tgid(
            sandbox.pidns_dev,
            sandbox.pidns_ino,
            &mut ns,
            core::mem::size_of::<bpf_pidns_info>() as u32,
        )
    };
    if found != 0 {
        ns = bpf_pidns_info { pid: 0, tgid: 0 };
    }
    Header {
        kind,
        tgid: (ids >> 32) as u32,
        tid: ids as u32,
        ns_tgid: ns.tgid,
        ns_tid: ns.pid,
        _pad: 0,
        // SAFETY: helper without arguments.
        time_ns: unsafe { bpf_ktime_get_boot_ns() },
    }
}

#[inline(always)]
pub fn offsets() -> Option<&'static KernelOffsets> {
    OFFSETS.get(0)
}

/// Submit flags: do not wake the reader for each record (a wakeup per record costs more than
/// the record); it drains on a short timer, and is woken only when the ring is a quarter full
/// or when it sleeps (`ASLEEP`: an idle sandbox costs its supervisor no timer).
#[inline(always)]
pub fn submit_flags(ring: &RingBuf<SyscallRecord, { RING_BYTES as usize }>, slot: u32) -> u64 {
    const BPF_RB_AVAIL_DATA: u64 = 0;
    const BPF_RB_RING_SIZE: u64 = 1;
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    let map = (ring as *const RingBuf<SyscallRecord, { RING_BYTES as usize }>)
        .cast_mut()
        .cast();
    // Rings differ in size (`RING_BYTES_PROCESS`): the size is asked, not assumed.
    // SAFETY: `map` is the map pointer the outer-map lookup returned.
    let (avail, size) = unsafe {
        (
            bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA),
            bpf_ringbuf_query(map, BPF_RB_RING_SIZE),
        )
    };
    if avail > size / 4 {
        return BPF_RB_FORCE_WAKEUP;
    }
    if let Some(asleep) = ASLEEP.get_ptr_mut(slot) {
        // SAFETY: a map value of this slot; a racing writer costs at most one more wakeup.
        unsafe {
            if *asleep != 0 {
                *asleep = 0;
                return BPF_RB_FORCE_WAKEUP;
            }
        }
    }
    BPF_RB_NO_WAKEUP
}
