//! Process lifecycle from the sched raw tracepoints: fork/clone, exec, exit. Task fields are
//! read at offsets the loader found in the kernel's BTF.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm,
        generated::{
            bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user,
        },
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use cordon_probe_common::{kind, sbflag, KernelOffsets, ProcHead, ProcRecord, Sandbox, AUX_LEN, PATH_LEN};

use crate::shared::{count_drop, current_sandbox, header, offsets, ring, submit_flags};

/// A `T` at `base + off` in kernel memory (zero if unreadable).
#[inline(always)]
fn read_at<T: Copy + Default>(base: *const u8, off: u32) -> T {
    let mut v = T::default();
    // SAFETY: reads kernel memory through the helper, which faults safely.
    unsafe {
        bpf_probe_read_kernel(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(off as usize).cast(),
        )
    };
    v
}

/// The current (just exec'd) task's argv, from its memory: `mm->arg_start..arg_end`, cut at
/// `AUX_LEN`. Returns the bytes copied.
#[inline(always)]
fn read_argv(off: &KernelOffsets, dst: *mut u8) -> u32 {
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mm = read_at::<u64>(task, off.task_mm) as *const u8;
    if mm.is_null() {
        return 0;
    }
    let (start, end) = (
        read_at::<u64>(mm, off.mm_arg_start),
        read_at::<u64>(mm, off.mm_arg_end),
    );
    if end <= start {
        return 0;
    }
    let mut n = end - start;
    if n > AUX_LEN as u64 {
        n = AUX_LEN as u64;
    }
    // SAFETY: `dst` has `AUX_LEN` writable bytes; the helper faults safely on a bad source.
    if unsafe { bpf_probe_read_user(dst.cast(), n as u32, start as *const _) } != 0 {
        return 0;
    }
    n as u32
}

/// Puts a process record in the ring: a `ProcHead` (fork, exit) or a whole `ProcRecord`
/// (exec), whose first field is its head.
#[inline(always)]
fn emit<T: 'static>(sandbox: &Sandbox, kind: u32, fill: impl FnOnce(*mut T)) {
    let Some(ring) = ring(sandbox) else { return };
    let Some(mut entry) = ring.reserve_untyped::<T>(0) else {
        count_drop(sandbox.slot);
        return;
    };
    let rec: *mut T = entry.as_mut_ptr();
    let head = rec.cast::<ProcHead>();
    // `T` is `ProcHead` or `ProcRecord`, whose first field is a `ProcHead`.
    // SAFETY: `rec` is a reserved, exclusively owned record starting with a head; field stores.
    unsafe {
        (*head).hdr = header(kind, sandbox);
        (*head).child_tid = 0;
        (*head).child_tgid = 0;
        (*head).exit_code = 0;
        (*head).group_dead = 0;
        (*head).filename_len = 0;
        (*head).argv_len = 0;
        (*head).comm = bpf_get_current_comm().unwrap_or([0; 16]);
    }
    fill(rec);
    entry.submit(submit_flags(ring, sandbox.slot));
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_fork(ctx: RawTracePointContext) -> i32 {
    let Some(sandbox) = current_sandbox() else {
        return 0;
    };
    let Some(off) = offsets() else { return 0 };
    let child = ctx.arg::<*const u8>(1);
    let (tid, tgid) = (
        read_at::<u32>(child, off.task_pid),
        read_at::<u32>(child, off.task_tgid),
    );
    emit(sandbox, kind::FORK, |rec: *mut ProcHead| {
        // SAFETY: `emit` passes a reserved ring-buffer record that only this program writes until it submits it; these are plain stores into its fields.
        unsafe {
            (*rec).child_tid = tid;
            (*rec).child_tgid = tgid;
        }
    });
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_exec(ctx: RawTracePointContext) -> i32 {
    let Some(sandbox) = current_sandbox() else {
        return 0;
    };
    let Some(off) = offsets() else { return 0 };
    let bprm = ctx.arg::<*const u8>(2);
    let mut filename: u64 = 0;
    // SAFETY: bpf_probe_read_kernel copies 8 bytes into the local `filename` and faults safely (returning an error) if the kernel address is not readable.
    unsafe {
        bpf_probe_read_kernel(
            (&mut filename as *mut u64).cast(),
            8,
            bprm.wrapping_add(off.binprm_filename as usize).cast(),
        )
    };
    emit(sandbox, kind::EXEC, |rec: *mut ProcRecord| {
        // SAFETY: `rec` is the reserved record `emit` owns until submit; the helper writes at most PATH_LEN bytes into its `filename` array and faults safely on a bad source.
        unsafe {
            let n = bpf_probe_read_kernel_str(
                (*rec).filename.as_mut_ptr().cast(),
                PATH_LEN as u32,
                filename as *const _,
            );
            (*rec).head.filename_len = if n > 0 { n as u32 } else { 0 };
            // Without syscall records there is no execve entry to take argv from.
            if sandbox.flags & sbflag::NO_SYSCALLS != 0 {
                (*rec).head.argv_len = read_argv(off, (*rec).argv.as_mut_ptr());
            }
        }
    });
    0
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)`
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_exit(ctx: RawTracePointContext) -> i32 {
    let Some(sandbox) = current_sandbox() else {
        return 0;
    };
    let Some(off) = offsets() else { return 0 };
    let task = ctx.arg::<*const u8>(0);
    let group_dead = ctx.arg::<u64>(1) as u32 & 1;
    let code = read_at::<u32>(task, off.task_exit_code);
    emit(sandbox, kind::EXIT, |rec: *mut ProcHead| {
        // SAFETY: `emit` passes a reserved ring-buffer record that only this program writes until it submits it; these are plain stores into its fields.
        unsafe {
            (*rec).exit_code = code;
            (*rec).group_dead = group_dead;
        }
    });
    0
}
