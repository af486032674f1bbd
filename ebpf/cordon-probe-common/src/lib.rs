//! Record layouts and map keys shared by cordon's eBPF probes and the supervisor.
//!
//! Everything here is `#[repr(C)]` plain data: the probes write these bytes into a ring buffer
//! or a map, the supervisor reads them back. Sizes and alignments are asserted at compile time
//! so a change on one side cannot silently shift fields on the other. x86_64 syscall numbers.
#![no_std]

/// Sandboxes that can be watched at once on one host (slots in the per-slot maps).
pub const MAX_SANDBOXES: u32 = 512;
/// Syscall numbers counted per sandbox; higher numbers are counted in the last bucket.
pub const MAX_SYSCALL: u32 = 512;
/// Bytes of a path argument kept in a record (longer paths are cut and flagged).
pub const PATH_LEN: usize = 256;
/// Bytes of the auxiliary buffer: second path, socket address or NUL-separated argv.
pub const AUX_LEN: usize = 256;
/// argv entries copied for an exec (the rest is counted as cut).
pub const ARGV_MAX: usize = 16;
/// Size of the ring buffer of a sandbox with `visibility = "full"` (the template of `RINGS`:
/// the kernel does not compare a ring's size with its map-of-maps' template, so the smaller
/// rings below fit the same table). The supervisor maps a ring whole (the kernel maps every
/// page at mmap time: ~0.3 ms per MiB of a launch here) and it stays allocated with its slot.
/// 4 MiB: `benches/scale.sh` (100 sandboxes, 10 of them recording 20k opens/s each on 2
/// cores) lost none at 192k events/s, where 2 MiB lost 2% and 8 MiB cost 11 MiB of PSS per
/// supervisor (issue 19's note).
pub const RING_BYTES: u32 = 4 << 20;
/// Size of the ring buffer of a sandbox with `visibility = "process"`: fork, exec, exit and
/// egress records only.
pub const RING_BYTES_PROCESS: u32 = 256 << 10;
/// Slots `0..FULL_SLOTS` have `RING_BYTES` rings, the others `RING_BYTES_PROCESS` ones: a
/// slot keeps its ring from one sandbox to the next, because replacing an entry of `RINGS`
/// waits for an RCU grace period.
pub const FULL_SLOTS: u32 = MAX_SANDBOXES / 2;
/// Egress rules per sandbox.
pub const MAX_NET_RULES: usize = 16;

/// Entries of the `SANDBOXES` table. A cgroup id `c` lives at one of the indexes
/// `(c + i) % SANDBOX_TABLE` for `i < SANDBOX_WAYS`. A direct-mapped array instead of a hash
/// map: every syscall on the host looks here, and array lookups are inlined by the verifier
/// while a hash lookup costs ~20 ns.
pub const SANDBOX_TABLE: u32 = 1 << 16;
pub const SANDBOX_WAYS: u32 = 4;

/// An entry of the `SANDBOXES` table (all zero: free).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// The sandbox's cgroup2 id (the leaf directory's inode); never 0 for a real cgroup.
    pub cgroup_id: u64,
    /// Index into the per-slot maps (ring buffers, counters, drops, egress rules).
    pub slot: u32,
    /// `sbflag` bits.
    pub flags: u32,
    /// The sandbox's pid namespace (device and inode of `/proc/PID/ns/pid`), so records carry
    /// pids as the agent sees them.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
}

/// `Sandbox::flags`.
pub mod sbflag {
    /// `[monitor] visibility = "process"`: the syscall programs pass the sandbox by (they may
    /// be attached for another sandbox); processes and egress are still recorded.
    pub const NO_SYSCALLS: u32 = 1;
    /// The agent ended and only the sandbox's init is left (cordon's own code, on its way
    /// out): nothing more is recorded or counted, so the supervisor's last drain is the last
    /// word while init's namespaces are torn down. Egress is still judged.
    pub const QUIET: u32 = 2;
}

/// Record kinds (first field of every record).
pub mod kind {
    pub const SYS_ENTER: u32 = 1;
    pub const SYS_EXIT: u32 = 2;
    pub const FORK: u32 = 3;
    pub const EXEC: u32 = 4;
    pub const EXIT: u32 = 5;
    pub const NET: u32 = 6;
}

/// Common head of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub kind: u32,
    /// Host process id (thread group) and thread id.
    pub tgid: u32,
    pub tid: u32,
    /// The same two as seen inside the sandbox's pid namespace (0 if unknown).
    pub ns_tgid: u32,
    pub ns_tid: u32,
    pub _pad: u32,
    /// `CLOCK_BOOTTIME` in nanoseconds.
    pub time_ns: u64,
}

/// Flags of [`SyscallRecord::flags`].
pub mod sysflag {
    /// `path` was longer than the buffer.
    pub const PATH_CUT: u32 = 1;
    /// `aux` was longer than the buffer (or argv had more than `ARGV_MAX` entries).
    pub const AUX_CUT: u32 = 2;
    /// `aux` holds a socket address (`aux_len` bytes of `struct sockaddr`).
    pub const AUX_SOCKADDR: u32 = 4;
    /// `aux` holds NUL-separated argv strings.
    pub const AUX_ARGV: u32 = 8;
    /// `aux` holds a second path.
    pub const AUX_PATH: u32 = 16;
}

/// A security-relevant syscall at entry (arguments, strings read from the caller's memory at
/// entry) or a denied syscall at exit (arguments and result).
///
/// The probes put only the bytes used in the ring: the head, then `path_len` bytes of path and
/// right after them `aux_len` bytes of aux, [`SyscallRecord::used`] in all (an open of
/// `/dev/null` takes 128 bytes of the ring with the ring's own header, not the 624 of the whole
/// record, so a ring holds ~4× more of them before a busy sandbox outruns its reader).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallRecord {
    pub head: SyscallHead,
    /// The path (`head.path_len` bytes, its NUL included), then the aux bytes (`head.aux_len`).
    pub data: [u8; PATH_LEN + AUX_LEN],
}

/// What every [`SyscallRecord`] carries before its strings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallHead {
    pub hdr: Header,
    pub nr: u32,
    pub flags: u32,
    /// Bytes of path at the start of `data` (at most `PATH_LEN`).
    pub path_len: u32,
    /// Bytes of aux right after the path (at most `AUX_LEN`): a second path, a socket address
    /// or NUL-separated argv (`sysflag`).
    pub aux_len: u32,
    /// Return value at exit (`SYS_EXIT`); 0 at entry.
    pub ret: i64,
    pub args: [u64; 6],
}

/// Bytes of a [`SyscallRecord`] before its strings; a ring record shorter than this is an
/// [`ExitRecord`].
pub const SYSCALL_HEAD: usize = core::mem::size_of::<SyscallHead>();

impl SyscallRecord {
    /// The bytes the probes put in the ring for this record: the head and the strings used.
    pub fn used(&self) -> &[u8] {
        let n = SYSCALL_HEAD
            + (self.head.path_len as usize).min(PATH_LEN)
            + (self.head.aux_len as usize).min(AUX_LEN);
        // The record is plain data without padding (its sizes are asserted below).
        // SAFETY: `n` is at most the record's size, so the slice stays inside `self`.
        unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), n) }
    }
}

/// The result of a syscall whose entry was recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitRecord {
    pub hdr: Header,
    pub nr: u32,
    pub _pad: u32,
    pub ret: i64,
}

/// A successful exec (`EXEC`): its head and the strings. A fork or an exit puts only its
/// [`ProcHead`] in the ring (72 bytes, not the 584 of the whole record).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcRecord {
    pub head: ProcHead,
    pub filename: [u8; PATH_LEN],
    pub argv: [u8; AUX_LEN],
}

/// fork/clone (`FORK`), a successful exec (`EXEC`), or a thread/process end (`EXIT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcHead {
    pub hdr: Header,
    /// FORK: the child's host tid and tgid (equal for a new process, not for a new thread).
    pub child_tid: u32,
    pub child_tgid: u32,
    /// EXIT: the kernel's exit code (status << 8 | signal) and whether the whole process ends.
    pub exit_code: u32,
    pub group_dead: u32,
    pub comm: [u8; 16],
    /// EXEC: the file executed.
    pub filename_len: u32,
    /// EXEC of a sandbox without syscall records (`sbflag::NO_SYSCALLS`): the new program's
    /// argv as its memory holds it, NUL-separated, cut at `AUX_LEN` (0: not read).
    pub argv_len: u32,
}

/// Socket operations seen by the cgroup hooks (`NetRecord::op`).
pub mod netop {
    pub const CONNECT4: u32 = 1;
    pub const CONNECT6: u32 = 2;
    pub const SENDMSG4: u32 = 3;
    pub const SENDMSG6: u32 = 4;
    pub const BIND4: u32 = 5;
    pub const BIND6: u32 = 6;
}

/// Values of [`NetRecord::rule`] that are not an index into the allowlist.
pub mod netrule {
    /// No allowlist rule decided (denied, or allowed for another reason: loopback, a bind,
    /// the sandbox's own namespace).
    pub const NONE: u32 = u32::MAX;
    /// Redirected to the supervisor's proxy (`netmode::PROXY`): a TCP connect sent to the
    /// proxy's listener, or a DNS datagram sent to its DNS socket. `NetRecord::allowed` is 1
    /// and `addr`/`port` are the destination the agent asked for.
    pub const PROXIED: u32 = u32::MAX - 1;
}

/// A connect, sendmsg with a destination, or bind, and the verdict the probe gave it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NetRecord {
    pub hdr: Header,
    pub op: u32,
    /// 1 allowed, 0 denied.
    pub allowed: u32,
    /// IPPROTO_TCP/UDP/… of the socket.
    pub protocol: u32,
    /// Host byte order.
    pub port: u32,
    /// IPv4 in `addr[0]` or IPv6 in all four words, network byte order.
    pub addr: [u32; 4],
    /// Index of the allowlist rule that matched, or [`netrule::NONE`], or
    /// [`netrule::PROXIED`] (redirected to the proxy).
    pub rule: u32,
    /// 4 or 6: how `addr` is to be read (an IPv4-mapped IPv6 address is reported as 4).
    pub family: u32,
}

/// How a sandbox's egress is decided (`NetPolicy::mode`).
pub mod netmode {
    /// The sandbox has its own network namespace: the kernel isolates it; hooks only report.
    pub const OWN_NAMESPACE: u32 = 0;
    /// The sandbox shares the host's network: only destinations matching a rule are allowed,
    /// and binds only to loopback addresses.
    pub const ALLOWLIST: u32 = 1;
    /// The sandbox has its own network namespace (only `lo` up) in which the supervisor
    /// listens: a TCP listener on `0.0.0.0:NetPolicy::proxy_port` and a UDP DNS socket on
    /// `127.0.0.1:53`. Every TCP connect to a non-loopback IPv4 destination (IPv4-mapped on
    /// an IPv6 socket included) is redirected to the listener with the destination encoded in
    /// the connection's addresses (see [`proxy`](crate::proxy)); every UDP datagram to port 53
    /// goes to the DNS socket, and replies look as if they came from the server the agent
    /// asked. Everything else that leaves loopback is refused (other UDP, other IPv6,
    /// non-TCP/UDP), as is all of it while `proxy_port` is 0. Loopback (127/8, ::1, 0.0.0.0,
    /// ::) and binds are left alone.
    pub const PROXY: u32 = 2;
}

/// One egress rule: destination prefix, port (0 = any), protocol (0 = any).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRule {
    /// 4 or 6.
    pub family: u32,
    pub protocol: u32,
    pub port: u32,
    pub prefix_len: u32,
    /// Network byte order, like `NetRecord::addr`.
    pub addr: [u32; 4],
}

/// A sandbox's egress policy, indexed by slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetPolicy {
    pub mode: u32,
    pub count: u32,
    pub rules: [NetRule; MAX_NET_RULES],
    /// `netmode::PROXY`: the port of the supervisor's TCP listener in the sandbox's namespace,
    /// host byte order. 0: not listening yet, every egress is refused (fail closed).
    pub proxy_port: u32,
}

/// The DNS port: UDP to it is redirected in `netmode::PROXY`.
pub const DNS_PORT: u16 = 53;
/// The server a sandbox's UDP socket last sent a redirected DNS datagram to (the probes'
/// `DNS_ORIGINS` socket storage): replies from the DNS socket are given this source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOrigin {
    /// IPv4, network byte order; 0: none (the socket's last DNS datagram went to loopback).
    pub ip4: u32,
    /// Host byte order.
    pub port: u32,
}

pub mod proxy;

/// Remotes tracked for traffic counts, over all sandboxes of the host.
pub const TRAFFIC_ENTRIES: u32 = 16384;

/// A remote end of a sandbox's traffic: the destination of what it sends, the source of what
/// it receives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrafficKey {
    pub slot: u32,
    /// 4 or 6.
    pub family: u32,
    /// IPPROTO_TCP, IPPROTO_UDP, … (0 when the packet was too short to tell).
    pub protocol: u32,
    /// The remote port for TCP and UDP, else 0.
    pub port: u32,
    /// IPv4 in `addr[0]`; network byte order.
    pub addr: [u32; 4],
}

/// Bytes (IP packet lengths) and packets to and from one remote.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes_out: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub packets_in: u64,
}

/// One sandbox slot's syscall counters, by syscall number (the last bucket takes numbers
/// beyond the table). One map value per slot, so the supervisor reads or clears all of a
/// slot's counters with a single lookup or update.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCounts {
    pub n: [u64; MAX_SYSCALL as usize],
}

impl SlotCounts {
    pub const ZERO: Self = Self {
        n: [0; MAX_SYSCALL as usize],
    };
}

/// Byte offsets of kernel struct fields the probes read, found in the running kernel's BTF
/// at load time (there are no CO-RE relocations in Rust eBPF).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_exit_code: u32,
    pub task_comm: u32,
    pub binprm_filename: u32,
    pub task_mm: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub _pad: u32,
}

/// What the syscall probes do for one syscall number (`syscall_spec`).
pub mod spec {
    /// Record this syscall at entry and its result at exit.
    pub const RECORD: u32 = 1 << 15;
    /// Bits 0-2: 1 + index of the path argument (0: none).
    pub const PATH_SHIFT: u32 = 0;
    /// Bits 3-5: 1 + index of a second path argument.
    pub const PATH2_SHIFT: u32 = 3;
    /// Bits 6-8: 1 + index of a `struct sockaddr *` argument (its length is the next one).
    pub const SOCKADDR_SHIFT: u32 = 6;
    /// Bits 9-11: 1 + index of an argv argument.
    pub const ARGV_SHIFT: u32 = 9;
    /// Record only when the sockaddr argument is non-NULL (sendto on a connected socket is
    /// ordinary I/O, not a new destination).
    pub const ONLY_WITH_SOCKADDR: u32 = 1 << 14;

    /// 1 + argument index stored at `shift`, or 0.
    pub const fn arg(spec: u32, shift: u32) -> u32 {
        (spec >> shift) & 7
    }
}

const fn s(path: u32, path2: u32, sockaddr: u32, argv: u32) -> u32 {
    spec::RECORD
        | (path << spec::PATH_SHIFT)
        | (path2 << spec::PATH2_SHIFT)
        | (sockaddr << spec::SOCKADDR_SHIFT)
        | (argv << spec::ARGV_SHIFT)
}

/// The security-relevant syscalls (x86_64 numbers) and which of their arguments are read.
/// Everything else is only counted — and recorded at exit if it failed with EPERM/EACCES.
pub const fn syscall_spec(nr: u32) -> u32 {
    match nr {
        // Files: path is argument 0 (open, creat, …) or 1 (the *at forms).
        // chdir too: the monitor follows each process's working directory to resolve
        // relative paths.
        2 | 85 | 87 | 83 | 84 | 90 | 92 | 94 | 76 | 133 | 161 | 166 | 80 => s(1, 0, 0, 0),
        257 | 437 | 263 | 258 | 268 | 452 | 260 | 259 => s(2, 0, 0, 0),
        // Two paths: rename/link/symlink and their *at forms; mount(source, target).
        82 | 86 | 88 | 165 | 155 => s(1, 2, 0, 0),
        264 | 316 | 265 => s(2, 4, 0, 0),
        266 => s(1, 3, 0, 0),
        // exec: path and argv.
        59 => s(1, 0, 0, 2),
        322 => s(2, 0, 0, 3),
        // Network: connect/bind(fd, addr, len), sendto(fd, buf, len, flags, addr, len).
        42 | 49 => s(0, 0, 2, 0),
        44 => s(0, 0, 5, 0) | spec::ONLY_WITH_SOCKADDR,
        // listen, accept, accept4; signals, ptrace and other processes' memory.
        50 | 43 | 288 | 62 | 200 | 234 | 101 | 310 | 311 | 434 | 424 | 81 => s(0, 0, 0, 0),
        // Credentials, namespaces, modules, bpf, fchmod/fchown, personality, exit_group.
        105 | 106 | 113 | 114 | 116 | 117 | 119 | 122 | 123 | 126 | 272 | 308 | 175 | 313 | 321 | 91 | 93
        | 135 | 231 | 425 => s(0, 0, 0, 0),
        _ => 0,
    }
}

/// Syscall numbers the userspace decoder names (x86_64).
pub mod nr {
    pub const EXECVE: u32 = 59;
    pub const EXECVEAT: u32 = 322;
    pub const EXIT_GROUP: u32 = 231;
    pub const GETPPID: u32 = 110;
}

const _: () = {
    assert!(core::mem::size_of::<Header>() == 32);
    assert!(SYSCALL_HEAD == 32 + 24 + 48);
    assert!(core::mem::size_of::<SyscallRecord>() == SYSCALL_HEAD + PATH_LEN + AUX_LEN);
    assert!(SYSCALL_HEAD > core::mem::size_of::<ExitRecord>());
    assert!(core::mem::size_of::<ExitRecord>() == 48);
    assert!(core::mem::size_of::<ProcHead>() == 32 + 16 + 16 + 8);
    assert!(core::mem::size_of::<ProcRecord>() == core::mem::size_of::<ProcHead>() + PATH_LEN + AUX_LEN);
    assert!(core::mem::size_of::<NetRecord>() == 32 + 16 + 16 + 8);
    assert!(core::mem::size_of::<Sandbox>() == 32);
    assert!(core::mem::size_of::<NetRule>() == 32);
    assert!(core::mem::size_of::<NetPolicy>() == 8 + 32 * MAX_NET_RULES + 4);
    assert!(core::mem::align_of::<NetPolicy>() == 4);
    assert!(core::mem::size_of::<DnsOrigin>() == 8);
    assert!(core::mem::align_of::<SyscallRecord>() == 8);
    assert!(core::mem::size_of::<KernelOffsets>() == 36);
    assert!(core::mem::size_of::<SlotCounts>() == 8 * MAX_SYSCALL as usize);
    assert!(core::mem::size_of::<TrafficKey>() == 32);
    assert!(core::mem::size_of::<Traffic>() == 32);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: these are #[repr(C)] structs of integers with explicit padding fields, valid for
    // any bit pattern, as aya's Pod requires.
    unsafe impl aya::Pod for super::Sandbox {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetPolicy {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DnsOrigin {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlotCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TrafficKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Traffic {}
    // SAFETY: as above (records the probes write; the decoder reads them from raw bytes).
    unsafe impl aya::Pod for super::Header {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallRecord {}
    // SAFETY: plain `repr(C)` data without padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::SyscallHead {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExitRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcHead {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetRecord {}
}
