//! Egress enforcement: cgroup connect/sendmsg/bind hooks attached to each sandbox's cgroup2
//! leaf. Returning 0 makes the syscall fail with EPERM in the agent. Every decision is
//! recorded.
//!
//! In `netmode::PROXY` the connect and sendmsg hooks also redirect: a TCP connect to the
//! supervisor's listener (the destination carried in the addresses, `cordon_probe_common::
//! proxy`), a UDP datagram to port 53 to the supervisor's DNS socket (the server remembered in
//! the socket's storage, `DNS_ORIGINS`); the recvmsg and getpeername hooks make the replies and
//! the peer look like the destination the agent asked for.

use aya_ebpf::{
    bindings::sockaddr, helpers::generated::bpf_bind, macros::cgroup_sock_addr, programs::SockAddrContext,
};
use cordon_probe_common::{
    kind, netmode, netop, netrule, proxy, DnsOrigin, NetPolicy, NetRecord, DNS_PORT, MAX_NET_RULES,
};

use crate::shared::{count_drop, current_sandbox, header, ring, submit_flags, DNS_ORIGINS, NET};

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// 127.0.0.1 as the context holds it (network byte order).
const LOCALHOST: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// The third word of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), network byte order.
const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

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

/// A datagram's source, as recvfrom/recvmsg will report it (cannot refuse: returns 1).
#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_dns_server(&ctx, false);
    1
}

/// Likewise on an IPv6 socket (an IPv4 source is reported IPv4-mapped).
#[cgroup_sock_addr(recvmsg6)]
pub fn recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_dns_server(&ctx, true);
    1
}

/// The peer getpeername(2) reports (cannot refuse: returns 1).
#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, false);
    1
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    restore_peer(&ctx, true);
    1
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
    if v6 && addr[0] == 0 && addr[1] == 0 && addr[2] == MAPPED {
        addr = [addr[3], 0, 0, 0];
        family = 4;
    }
    let (allowed, rule) = match NET.get(sandbox.slot) {
        None => (0, netrule::NONE),
        Some(policy) if policy.mode == netmode::ALLOWLIST => {
            if matches!(op, netop::BIND4 | netop::BIND6) {
                (is_loopback(family, &addr) as u32, netrule::NONE)
            } else {
                match_rules(policy, family, protocol, port, &addr)
            }
        }
        Some(policy) if policy.mode == netmode::PROXY => {
            proxy_decide(ctx, policy, op, family, protocol, port, &addr)
        }
        Some(_) => (1, netrule::NONE),
    };
    if let Some(ring) = ring(sandbox) {
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
                entry.submit(submit_flags(ring, sandbox.slot));
            }
            None => count_drop(sandbox.slot),
        }
    }
    allowed as i32
}

/// `netmode::PROXY`: (allowed, rule) for one connect, sendmsg or bind, after redirecting it if
/// it goes to the proxy. `addr[0]` is the IPv4 destination when `family` is 4.
#[inline(always)]
fn proxy_decide(
    ctx: &SockAddrContext,
    policy: &NetPolicy,
    op: u32,
    family: u32,
    protocol: u32,
    port: u32,
    addr: &[u32; 4],
) -> (u32, u32) {
    // The sandbox's namespace is its own: it may bind anything in it.
    if matches!(op, netop::BIND4 | netop::BIND6) {
        return (1, netrule::NONE);
    }
    let v6 = matches!(op, netop::CONNECT6 | netop::SENDMSG6);
    if is_local(family, addr) {
        // A datagram to the DNS socket itself: its replies keep their real source.
        if protocol == IPPROTO_UDP && port == u32::from(DNS_PORT) {
            let origin = DNS_ORIGINS.get_ptr_mut(ctx);
            if !origin.is_null() {
                // SAFETY: a 4-byte store into the socket's own storage (non-null, checked above).
                unsafe { (*origin).ip4 = 0 };
            }
        }
        return (1, netrule::NONE);
    }
    // Fail closed: nothing leaves loopback before the proxy listens, nor any IPv6 proper.
    if family != 4 || policy.proxy_port == 0 || policy.proxy_port > u32::from(u16::MAX) {
        return (0, netrule::NONE);
    }
    let proxy_port = policy.proxy_port as u16;
    let ip4 = addr[0];
    if protocol == IPPROTO_TCP && matches!(op, netop::CONNECT4 | netop::CONNECT6) {
        return redirect_tcp(ctx, v6, ip4, port as u16, proxy_port);
    }
    if protocol == IPPROTO_UDP && port == u32::from(DNS_PORT) {
        return redirect_dns(ctx, v6, ip4);
    }
    (0, netrule::NONE)
}

/// `struct sockaddr_in`.
#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: u32,
    zero: [u8; 8],
}

/// `struct sockaddr_in6`.
#[repr(C)]
struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u32; 4],
    scope_id: u32,
}

/// Send a TCP connect to `ip4:port` to the proxy's listener: bind the socket to the encoded
/// source (port 0: the kernel picks one at connect), then rewrite the destination.
#[inline(always)]
fn redirect_tcp(ctx: &SockAddrContext, v6: bool, ip4: u32, port: u16, proxy_port: u16) -> (u32, u32) {
    let Some(r) = proxy::encode(ip4.to_ne_bytes(), port) else {
        return (0, netrule::NONE);
    };
    let source = u32::from_ne_bytes(r.source);
    let listen = u32::from_ne_bytes(r.listen);
    let bound = if v6 {
        let mut sa = SockaddrIn6 {
            family: AF_INET6,
            port: 0,
            flowinfo: 0,
            addr: [0, 0, MAPPED, source],
            scope_id: 0,
        };
        // The helper only reads the stack sockaddr_in6, of exactly the length given.
        // SAFETY: the context the kernel passed and a live stack address of that length.
        unsafe {
            bpf_bind(
                ctx.sock_addr,
                (&mut sa as *mut SockaddrIn6).cast::<sockaddr>(),
                core::mem::size_of::<SockaddrIn6>() as i32,
            )
        }
    } else {
        let mut sa = SockaddrIn {
            family: AF_INET,
            port: 0,
            addr: source,
            zero: [0; 8],
        };
        // SAFETY: as above, a stack sockaddr_in.
        unsafe {
            bpf_bind(
                ctx.sock_addr,
                (&mut sa as *mut SockaddrIn).cast::<sockaddr>(),
                core::mem::size_of::<SockaddrIn>() as i32,
            )
        }
    };
    // Already bound (by the agent, or a connect that failed before): the source cannot carry
    // the destination.
    if bound != 0 {
        return (0, netrule::NONE);
    }
    set_destination(ctx, v6, listen, proxy_port);
    (1, netrule::PROXIED)
}

/// Send a datagram (or connect a UDP socket) meant for the DNS server `ip4` to the DNS socket,
/// remembering the server for the replies.
#[inline(always)]
fn redirect_dns(ctx: &SockAddrContext, v6: bool, ip4: u32) -> (u32, u32) {
    let origin = DNS_ORIGINS.get_or_insert_ptr_mut(ctx, None);
    if origin.is_null() {
        return (0, netrule::NONE);
    }
    // SAFETY: the socket's own storage (created zeroed if it was not there), non-null.
    unsafe {
        *origin = DnsOrigin {
            ip4,
            port: u32::from(DNS_PORT),
        }
    };
    set_destination(ctx, v6, LOCALHOST, DNS_PORT);
    (1, netrule::PROXIED)
}

/// Rewrite the destination to `ip4:port` (IPv4-mapped on an IPv6 socket).
#[inline(always)]
fn set_destination(ctx: &SockAddrContext, v6: bool, ip4: u32, port: u16) {
    let sa = ctx.sock_addr;
    // SAFETY: permitted 4-byte stores to the context's user_ip4/user_ip6/user_port.
    unsafe {
        if v6 {
            (*sa).user_ip6[0] = 0;
            (*sa).user_ip6[1] = 0;
            (*sa).user_ip6[2] = MAPPED;
            (*sa).user_ip6[3] = ip4;
        } else {
            (*sa).user_ip4 = ip4;
        }
        (*sa).user_port = u32::from(port.to_be());
    }
}

/// The address in the context, if it is IPv4 (IPv4-mapped on an IPv6 socket).
#[inline(always)]
fn context_ip4(ctx: &SockAddrContext, v6: bool) -> Option<u32> {
    let sa = ctx.sock_addr;
    // SAFETY: permitted 4-byte loads from the context.
    unsafe {
        if !v6 {
            return Some((*sa).user_ip4);
        }
        if (*sa).user_ip6[0] == 0 && (*sa).user_ip6[1] == 0 && (*sa).user_ip6[2] == MAPPED {
            Some((*sa).user_ip6[3])
        } else {
            None
        }
    }
}

/// A reply from the DNS socket (127.0.0.1:53) to a socket whose datagrams were redirected gets
/// the source the socket sent to. Returns whether it rewrote.
#[inline(always)]
fn restore_dns_server(ctx: &SockAddrContext, v6: bool) -> bool {
    // SAFETY: permitted 4-byte load from the context.
    let port = unsafe { (*ctx.sock_addr).user_port };
    if port != u32::from(DNS_PORT.to_be()) || context_ip4(ctx, v6) != Some(LOCALHOST) {
        return false;
    }
    let stored = DNS_ORIGINS.get_ptr_mut(ctx);
    if stored.is_null() {
        return false;
    }
    // SAFETY: the socket's own storage, non-null; a plain copy.
    let origin = unsafe { *stored };
    if origin.ip4 == 0 {
        return false;
    }
    set_destination(ctx, v6, origin.ip4, origin.port as u16);
    true
}

/// getpeername: a connected UDP socket redirected to the DNS socket names the server it asked;
/// a TCP socket connected to the proxy's listener names the destination encoded in its
/// addresses.
#[inline(always)]
fn restore_peer(ctx: &SockAddrContext, v6: bool) {
    if restore_dns_server(ctx, v6) {
        return;
    }
    let sa = ctx.sock_addr;
    // `sk` is the kernel's (non-null) socket, whose bpf_sock fields may be read.
    // SAFETY: permitted loads from the context and from the socket it points to.
    let (protocol, port, source) = unsafe {
        let sk = (*sa).__bindgen_anon_1.sk;
        ((*sa).protocol, (*sa).user_port, (*sk).src_ip4)
    };
    if protocol != IPPROTO_TCP {
        return;
    }
    let Some(peer) = context_ip4(ctx, v6) else {
        return;
    };
    let Some(sandbox) = current_sandbox() else {
        return;
    };
    let Some(policy) = NET.get(sandbox.slot) else {
        return;
    };
    // Only a connection to the proxy's listener carries a destination.
    if policy.mode != netmode::PROXY || u32::from((policy.proxy_port as u16).to_be()) != port {
        return;
    }
    if let Some((dst, dport)) = proxy::decode(peer.to_ne_bytes(), source.to_ne_bytes()) {
        set_destination(ctx, v6, u32::from_ne_bytes(dst), dport);
    }
}

#[inline(always)]
fn is_loopback(family: u32, addr: &[u32; 4]) -> bool {
    if family == 4 {
        u32::from_be(addr[0]) >> 24 == 127
    } else {
        addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 1u32.to_be()
    }
}

/// Loopback, or the unspecified address (which a connect or send turns into loopback).
#[inline(always)]
fn is_local(family: u32, addr: &[u32; 4]) -> bool {
    is_loopback(family, addr)
        || if family == 4 {
            addr[0] == 0
        } else {
            addr[0] == 0 && addr[1] == 0 && addr[2] == 0 && addr[3] == 0
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
    (0, netrule::NONE)
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
