//! Maps and helpers every program uses.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    btf_maps::{Array, ArrayOfMaps, HashMap, PerCpuArray, RingBuf},
    helpers::bpf_get_current_pid_tgid,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_ns_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::btf_map,
};
use cordon_probe_common::{
    Header, KernelOffsets, NetPolicy, Sandbox, SyscallRecord, MAX_SANDBOXES, MAX_SYSCALL, RING_BYTES,
};

/// Watched sandboxes by cgroup2 id. Written by the supervisor before the agent starts.
#[btf_map]
pub static SANDBOXES: HashMap<u64, Sandbox, 1024> = HashMap::new();

/// One ring buffer per slot, created by the supervisor that owns the slot, so each `cordon`
/// process reads only its own sandbox's records.
#[btf_map]
pub static RINGS: ArrayOfMaps<RingBuf<SyscallRecord, { RING_BYTES as usize }>, { MAX_SANDBOXES as usize }> =
    ArrayOfMaps::new();

/// Syscall counts: index `slot * MAX_SYSCALL + nr`, one copy per CPU (no atomics needed).
#[btf_map]
pub static COUNTS: PerCpuArray<u64, { (MAX_SANDBOXES * MAX_SYSCALL) as usize }> = PerCpuArray::new();

/// Records lost because a slot's ring buffer was full, per slot and CPU.
#[btf_map]
pub static DROPS: PerCpuArray<u64, { MAX_SANDBOXES as usize }> = PerCpuArray::new();

/// Egress policy per slot.
#[btf_map]
pub static NET: Array<NetPolicy, { MAX_SANDBOXES as usize }> = Array::new();

/// Kernel struct offsets found in BTF by the loader (index 0).
#[btf_map]
pub static OFFSETS: Array<KernelOffsets, 1> = Array::new();

/// The watched sandbox the current task belongs to, if any.
#[inline(always)]
pub fn current_sandbox() -> Option<&'static Sandbox> {
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is plain data; a concurrent delete by the supervisor can only make us
    // read the slot of a sandbox that is being torn down, which the ring lookup then misses.
    unsafe { SANDBOXES.get(&cgroup) }
}

#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(n) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU writes it while preemption is off in BPF.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
pub fn count_syscall(slot: u32, nr: u32) {
    let bucket = if nr < MAX_SYSCALL { nr } else { MAX_SYSCALL - 1 };
    if let Some(n) = COUNTS.get_ptr_mut(slot.wrapping_mul(MAX_SYSCALL).wrapping_add(bucket)) {
        // SAFETY: per-CPU slot, as in count_drop.
        unsafe { *n += 1 };
    }
}

#[inline(always)]
pub fn ring(slot: u32) -> Option<&'static RingBuf<SyscallRecord, { RING_BYTES as usize }>> {
    RINGS.get(slot)
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
