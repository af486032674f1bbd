//! cordon's eBPF programs. One loaded set serves every sandbox on the host: each program first
//! looks up the current task's cgroup2 id in `SANDBOXES` and returns at once for anything that
//! is not a watched sandbox, so nothing outside a sandbox is recorded.
//!
//! Built for `bpfel-unknown-none` by the supervisor's build.rs; on the host this is an empty
//! binary so `cargo build --workspace` keeps working.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The workspace warns on truncating casts; here they are the point: the low half of a u64
// helper result (`tid` of pid_tgid, a hash of the cgroup id), a syscall number from orig_ax,
// a port from its 32-bit context field, string lengths bounded by their buffer. `try_from`
// would add branches the verifier must follow in every program for values that cannot fail.
#![cfg_attr(target_arch = "bpf", allow(clippy::cast_possible_truncation))]

#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod proc;
#[cfg(target_arch = "bpf")]
mod shared;
#[cfg(target_arch = "bpf")]
mod syscalls;
#[cfg(target_arch = "bpf")]
mod traffic;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program with a reachable call here; this only makes it link.
    // SAFETY: unreachable in a loaded program (see above).
    unsafe { core::hint::unreachable_unchecked() }
}
