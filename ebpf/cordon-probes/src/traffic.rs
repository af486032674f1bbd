//! Traffic counts: cgroup_skb ingress and egress hooks on each sandbox's cgroup2 leaf add every
//! IP packet's length to its remote end's counters (destination when sent, source when
//! received). They never drop a packet: enforcement is the sock_addr hooks' job (`net`).

use aya_ebpf::{
    helpers::generated::bpf_skb_cgroup_id, macros::cgroup_skb, programs::SkBuffContext, EbpfContext,
};
use cordon_probe_common::{Traffic, TrafficKey};

use crate::shared::{sandbox_of, REMOTES, TRAFFIC, UNTRACKED};

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const BPF_NOEXIST: u64 = 1;

#[cgroup_skb(egress)]
pub fn skb_egress(ctx: SkBuffContext) -> i32 {
    account(&ctx, true);
    1
}

#[cgroup_skb(ingress)]
pub fn skb_ingress(ctx: SkBuffContext) -> i32 {
    account(&ctx, false);
    1
}

#[inline(always)]
fn account(ctx: &SkBuffContext, out: bool) {
    // SAFETY: the context's own skb pointer, as the helper expects.
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast()) };
    let Some(sandbox) = sandbox_of(cgroup) else { return };
    let Some(mut key) = remote(ctx, out) else { return };
    key.slot = sandbox.slot;
    let len = u64::from(ctx.len());
    if let Some(t) = TRAFFIC.get_ptr_mut(&key) {
        // SAFETY: per-CPU value: only this CPU writes it, with preemption off in BPF.
        unsafe { add(&mut *t, len, out) };
        return;
    }
    let mut t = Traffic::default();
    add(&mut t, len, out);
    if TRAFFIC.insert(&key, &t, BPF_NOEXIST).is_ok() {
        if let Some(n) = REMOTES.get_ptr_mut(sandbox.slot) {
            // SAFETY: a per-CPU array slot that only this CPU writes, with preemption off.
            unsafe { *n += 1 };
        }
    } else {
        // Another CPU added the remote meanwhile (its copy for this CPU is zero), or the table
        // is full: then the packet is counted as untracked, never silently.
        match TRAFFIC.get_ptr_mut(&key) {
            // SAFETY: a per-CPU hash value: only this CPU writes its copy, with preemption off
            // in BPF, so the exclusive borrow is not aliased.
            Some(t) => unsafe { add(&mut *t, len, out) },
            None => {
                if let Some(n) = UNTRACKED.get_ptr_mut(sandbox.slot) {
                    // SAFETY: a per-CPU array slot that only this CPU writes, with preemption off.
                    unsafe { *n += 1 };
                }
            }
        }
    }
}

#[inline(always)]
fn add(t: &mut Traffic, len: u64, out: bool) {
    if out {
        t.bytes_out += len;
        t.packets_out += 1;
    } else {
        t.bytes_in += len;
        t.packets_in += 1;
    }
}

/// The packet's remote end. cgroup_skb packets start at the IP header.
#[inline(always)]
fn remote(ctx: &SkBuffContext, out: bool) -> Option<TrafficKey> {
    let version = ctx.load::<u8>(0).ok()? >> 4;
    let mut key = TrafficKey::default();
    let ports_at = match version {
        4 => {
            let ihl = usize::from(ctx.load::<u8>(0).ok()? & 0x0f) * 4;
            key.family = 4;
            key.protocol = u32::from(ctx.load::<u8>(9).ok()?);
            key.addr[0] = ctx.load::<u32>(if out { 16 } else { 12 }).ok()?;
            ihl
        }
        6 => {
            key.family = 6;
            key.protocol = u32::from(ctx.load::<u8>(6).ok()?);
            let at = if out { 24 } else { 8 };
            key.addr = ctx.load::<[u32; 4]>(at).ok()?;
            40
        }
        _ => return None,
    };
    if key.protocol == u32::from(IPPROTO_TCP) || key.protocol == u32::from(IPPROTO_UDP) {
        // Source port first, then destination port, in both protocols.
        let port = ctx.load::<u16>(ports_at + if out { 2 } else { 0 }).ok()?;
        key.port = u32::from(u16::from_be(port));
    }
    Some(key)
}
