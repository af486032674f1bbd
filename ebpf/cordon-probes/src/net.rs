//! Egress enforcement: cgroup connect/sendmsg/bind hooks attached to each sandbox's cgroup2
//! leaf. Returning 0 makes the syscall fail with EPERM in the agent. Every decision is
//! recorded.

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use cordon_probe_common::{kind, netmode, netop, NetPolicy, NetRecord, MAX_NET_RULES};

use crate::shared::{count_drop, current_sandbox, header, ring, submit_flags, NET};

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, netop::CONNECT4)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, netop::CONNECT6)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, netop::SENDMSG4)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, netop::SENDMSG6)
}

#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, netop::BIND4)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, netop::BIND6)
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, op: u32) -> i32 {
    let Some(sandbox) = current_sandbox() else {
        return 1;
    };
    let sa = ctx.sock_addr;
    let v6 = matches!(op, netop::CONNECT6 | netop::SENDMSG6 | netop::BIND6);
    // SAFETY: `sa` is the context the kernel passed; these are permitted 4-byte loads.
    let (mut addr, port, protocol) = unsafe {
        let addr = if v6 {
            [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ]
        } else {
            [(*sa).user_ip4, 0, 0, 0]
        };
        (addr, u16::from_be((*sa).user_port as u16) as u32, (*sa).protocol)
    };
    let mut family = if v6 { 6 } else { 4 };
    // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) reaches an IPv4 host: judge it as IPv4.
    if v6 && addr[0] == 0 && addr[1] == 0 && addr[2] == 0xffffu32.to_be() {
        addr = [addr[3], 0, 0, 0];
        family = 4;
    }
    let (allowed, rule) = match NET.get(sandbox.slot) {
        None => (0, u32::MAX),
        Some(policy) if policy.mode == netmode::ALLOWLIST => {
            if matches!(op, netop::BIND4 | netop::BIND6) {
                (is_loopback(family, &addr) as u32, u32::MAX)
            } else {
                match_rules(policy, family, protocol, port, &addr)
            }
        }
        Some(_) => (1, u32::MAX),
    };
    if let Some(ring) = ring(sandbox.slot) {
        match ring.reserve_untyped::<NetRecord>(0) {
            Some(mut entry) => {
                entry.write(NetRecord {
                    hdr: header(kind::NET, sandbox),
                    op,
                    allowed,
                    protocol,
                    port,
                    addr,
                    rule,
                    family,
                });
                entry.submit(submit_flags(ring));
            }
            None => count_drop(sandbox.slot),
        }
    }
    allowed as i32
}

#[inline(always)]
fn is_loopback(family: u32, addr: &[u32; 4]) -> bool {
    if family == 4 {
        u32::from_be(addr[0]) >> 24 == 127
    } else {
        addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 1u32.to_be()
    }
}

#[inline(always)]
fn match_rules(policy: &NetPolicy, family: u32, protocol: u32, port: u32, addr: &[u32; 4]) -> (u32, u32) {
    for i in 0..MAX_NET_RULES {
        if i as u32 >= policy.count {
            break;
        }
        let r = &policy.rules[i];
        if r.family != family
            || (r.protocol != 0 && r.protocol != protocol)
            || (r.port != 0 && r.port != port)
        {
            continue;
        }
        if prefix_matches(r.prefix_len, &r.addr, addr) {
            return (1, i as u32);
        }
    }
    (0, u32::MAX)
}

#[inline(always)]
fn prefix_matches(prefix_len: u32, net: &[u32; 4], addr: &[u32; 4]) -> bool {
    for w in 0..4 {
        let start = 32 * w as u32;
        if prefix_len <= start {
            return true;
        }
        let bits = if prefix_len - start >= 32 {
            32
        } else {
            prefix_len - start
        };
        let mask = if bits == 32 { u32::MAX } else { !(u32::MAX >> bits) };
        if u32::from_be(net[w]) & mask != u32::from_be(addr[w]) & mask {
            return false;
        }
    }
    true
}
