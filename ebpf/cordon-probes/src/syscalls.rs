//! sys_enter / sys_exit: count every syscall of a sandbox, record the security-relevant ones
//! with their arguments at entry and their result at exit, and record every syscall that
//! failed with EPERM or EACCES (seccomp, landlock, DAC, read-only mounts) at exit.

use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use aya_ebpf::{
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use cordon_probe_common::{
    kind, sbflag, spec, syscall_spec, sysflag, ExitRecord, Sandbox, SyscallHead, SyscallRecord, ARGV_MAX,
    AUX_LEN, PATH_LEN, SYSCALL_HEAD,
};

use crate::shared::{count_drop, count_syscall, count_written, current_sandbox, header, ring, submit_flags};

const EPERM: i64 = 1;
const EACCES: i64 = 13;
/// `struct pt_regs` on x86_64: r10 at 56 … orig_ax at 120 (arch/x86/include/asm/ptrace.h).
const REGS_FROM: usize = 56;
const REGS_WORDS: usize = 9;
const ORIG_AX: usize = 120;
/// Each argv string is cut to this many bytes so the verifier can bound the copy.
const ARGV_PIECE: usize = AUX_LEN / 2;

/// Syscall arguments in order (di, si, dx, r10, r8, r9).
#[inline(always)]
fn read_args(regs: *const u8) -> [u64; 6] {
    let mut w = [0u64; REGS_WORDS];
    // SAFETY: reads kernel memory through the helper, which faults safely.
    unsafe {
        bpf_probe_read_kernel(
            w.as_mut_ptr().cast(),
            (REGS_WORDS * 8) as u32,
            regs.wrapping_add(REGS_FROM).cast(),
        )
    };
    // r10=0 r9=1 r8=2 ax=3 cx=4 dx=5 si=6 di=7 orig_ax=8
    [w[7], w[6], w[5], w[0], w[2], w[1]]
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let Some(sandbox) = current_sandbox() else {
        return 0;
    };
    if sandbox.flags & (sbflag::NO_SYSCALLS | sbflag::QUIET) != 0 {
        return 0;
    }
    let nr = ctx.arg::<u64>(1) as u32;
    count_syscall(sandbox.slot, nr);
    let sp = syscall_spec(nr);
    if sp & spec::RECORD == 0 {
        return 0;
    }
    let args = read_args(ctx.arg::<*const u8>(0));
    if sp & spec::ONLY_WITH_SOCKADDR != 0 && !has_sockaddr(sp, &args) {
        return 0;
    }
    emit_full(sandbox, kind::SYS_ENTER, nr, 0, &args, sp);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let Some(sandbox) = current_sandbox() else {
        return 0;
    };
    if sandbox.flags & (sbflag::NO_SYSCALLS | sbflag::QUIET) != 0 {
        return 0;
    }
    let regs = ctx.arg::<*const u8>(0);
    let ret = ctx.arg::<i64>(1);
    let mut nr: u64 = 0;
    // An unreadable pt_regs address makes the helper fail, not fault.
    // SAFETY: bpf_probe_read_kernel copies 8 bytes into the local `nr`.
    unsafe { bpf_probe_read_kernel((&mut nr as *mut u64).cast(), 8, regs.wrapping_add(ORIG_AX).cast()) };
    let nr = nr as u32;
    // write, pwrite64, writev, pwritev, pwritev2: bytes written, for the monitor's budget.
    if ret > 0 && matches!(nr, 1 | 18 | 20 | 296 | 328) {
        count_written(sandbox.slot, ret as u64);
        return 0;
    }
    let sp = syscall_spec(nr);
    if ret == -EPERM || ret == -EACCES {
        // Denials are recorded whole: seccomp denies before sys_enter runs, so this may be the
        // only record of the call.
        let args = read_args(regs);
        emit_full(sandbox, kind::SYS_EXIT, nr, ret, &args, sp);
        return 0;
    }
    if sp & spec::RECORD == 0 {
        return 0;
    }
    if sp & spec::ONLY_WITH_SOCKADDR != 0 && !has_sockaddr(sp, &read_args(regs)) {
        return 0;
    }
    let Some(ring) = ring(sandbox) else { return 0 };
    let Some(mut entry) = ring.reserve_untyped::<ExitRecord>(0) else {
        count_drop(sandbox.slot);
        return 0;
    };
    entry.write(ExitRecord {
        hdr: header(kind::SYS_EXIT, sandbox),
        nr,
        _pad: 0,
        ret,
    });
    entry.submit(submit_flags(ring, sandbox.slot));
    0
}

#[inline(always)]
fn has_sockaddr(sp: u32, args: &[u64; 6]) -> bool {
    let i = spec::arg(sp, spec::SOCKADDR_SHIFT);
    i != 0 && arg_at(args, i) != 0
}

#[inline(always)]
fn arg_at(args: &[u64; 6], one_based: u32) -> u64 {
    match one_based {
        1 => args[0],
        2 => args[1],
        3 => args[2],
        4 => args[3],
        5 => args[4],
        6 => args[5],
        _ => 0,
    }
}

/// Copies a NUL-terminated user string into `dst`; returns the bytes copied (with the NUL)
/// and whether it was cut.
#[inline(always)]
fn user_str(src: u64, dst: *mut u8, cap: usize) -> (u32, bool) {
    if src == 0 {
        return (0, false);
    }
    // SAFETY: `dst` points at `cap` writable bytes of this CPU's scratch record.
    let n = unsafe { bpf_probe_read_user_str(dst.cast(), cap as u32, src as *const _) };
    if n <= 0 {
        return (0, false);
    }
    (n as u32, n as usize >= cap)
}

/// Where a full record is put together before the bytes used are copied to the ring (a
/// ring reservation must have a size the verifier knows; the used size is not known until
/// the strings are read). One per CPU: the syscall programs run with preemption off.
#[btf_map]
static SCRATCH: PerCpuArray<SyscallRecord, 1> = PerCpuArray::new();

#[inline(always)]
fn emit_full(sandbox: &Sandbox, kind: u32, nr: u32, ret: i64, args: &[u64; 6], sp: u32) {
    let Some(ring) = ring(sandbox) else { return };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        count_drop(sandbox.slot);
        return;
    };
    // Fields are written through raw pointers, never through references to uninitialised
    // memory; this CPU's scratch record is used by nothing else while this program runs.
    // SAFETY: `rec` is valid and ours; every helper writes inside `data` (bounds below).
    let used = unsafe {
        let data = (*rec).data.as_mut_ptr();
        let mut flags = 0;
        let (len, cut) = user_str(arg_at(args, spec::arg(sp, spec::PATH_SHIFT)), data, PATH_LEN);
        if cut {
            flags |= sysflag::PATH_CUT;
        }
        let mut path_len = len as usize;
        if path_len > PATH_LEN {
            path_len = PATH_LEN;
        }
        let aux = data.wrapping_add(path_len);
        let mut aux_len = 0u32;
        let path2 = spec::arg(sp, spec::PATH2_SHIFT);
        let sockaddr = spec::arg(sp, spec::SOCKADDR_SHIFT);
        let argv = spec::arg(sp, spec::ARGV_SHIFT);
        if path2 != 0 {
            let (len, cut) = user_str(arg_at(args, path2), aux, AUX_LEN);
            aux_len = len;
            flags |= sysflag::AUX_PATH | if cut { sysflag::AUX_CUT } else { 0 };
        } else if sockaddr != 0 {
            let ptr = arg_at(args, sockaddr);
            let mut want = arg_at(args, sockaddr + 1);
            if want > 128 {
                want = 128;
            }
            if ptr != 0 && want > 0 && bpf_probe_read_user(aux.cast(), want as u32, ptr as *const _) == 0 {
                aux_len = want as u32;
            }
            flags |= sysflag::AUX_SOCKADDR;
        } else if argv != 0 {
            let (len, cut) = copy_argv(arg_at(args, argv), aux);
            aux_len = len;
            flags |= sysflag::AUX_ARGV | if cut { sysflag::AUX_CUT } else { 0 };
        }
        let mut aux_used = aux_len as usize;
        if aux_used > AUX_LEN {
            aux_used = AUX_LEN;
        }
        (*rec).head = SyscallHead {
            hdr: header(kind, sandbox),
            nr,
            flags,
            path_len: path_len as u32,
            aux_len: aux_used as u32,
            ret,
            args: *args,
        };
        SYSCALL_HEAD + path_len + aux_used
    };
    // SAFETY: `used` is at most the size of the record `rec` points at.
    let bytes = unsafe { core::slice::from_raw_parts(rec.cast::<u8>().cast_const(), used) };
    if ring
        .output_untyped(bytes, submit_flags(ring, sandbox.slot))
        .is_err()
    {
        count_drop(sandbox.slot);
    }
}

/// Copies argv strings NUL-separated into `aux`: each cut to `ARGV_PIECE` bytes, at most
/// `ARGV_MAX` of them, stopping once the second half of the buffer is reached. Cut: any string
/// was cut, or not all of them were copied.
#[inline(always)]
fn copy_argv(argv: u64, aux: *mut u8) -> (u32, bool) {
    if argv == 0 {
        return (0, false);
    }
    let mut off: usize = 0;
    let mut cut_one = false;
    for i in 0..ARGV_MAX {
        let mut ptr: u64 = 0;
        // SAFETY: reads one pointer of the user's argv array through the helper.
        let r = unsafe {
            bpf_probe_read_user(
                (&mut ptr as *mut u64).cast(),
                8,
                (argv + 8 * i as u64) as *const _,
            )
        };
        if r != 0 || ptr == 0 {
            return (off as u32, cut_one);
        }
        if off >= ARGV_PIECE {
            return (off as u32, true);
        }
        let at = off & (ARGV_PIECE - 1);
        let (n, cut) = user_str(ptr, aux.wrapping_add(at), ARGV_PIECE);
        cut_one |= cut;
        off = at + n as usize;
    }
    (off as u32, true)
}
