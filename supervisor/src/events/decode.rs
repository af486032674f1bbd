//! Raw probe records → typed events. Pure: no syscalls, so it is unit-tested on synthetic
//! records and benchmarked on its own.
//!
//! A recorded syscall arrives as two records (entry with arguments, exit with the result);
//! they are joined per thread into one `Syscall` event. A denial that never entered (seccomp
//! refuses before `sys_enter`) arrives as one full record at exit.

use std::collections::HashMap;

use cordon_probe_common::{
    kind, netop, netrule, sysflag, ExitRecord, Header, NetRecord, ProcHead, ProcRecord, SyscallHead, Traffic,
    TrafficKey, MAX_SYSCALL, SYSCALL_HEAD,
};

use super::names::{ip_text, protocol_name, sockaddr};
use super::pb::{self, event::Kind};
use crate::kernel::errno_name;

/// What the decoder knows about a process of the sandbox (keyed by host tgid).
#[derive(Debug, Clone, Default)]
struct Proc {
    ns_pid: u32,
    parent: u32,
    comm: String,
}

pub struct Decoder {
    sandbox: String,
    seq: u64,
    /// Added to CLOCK_BOOTTIME ns to get Unix ns.
    boot_to_unix_ns: i64,
    pending: HashMap<u32, pb::Event>,
    procs: HashMap<u32, Proc>,
    /// Syscall names, resolved on first use.
    names: HashMap<u32, String>,
    resolve: fn(u32) -> String,
    rule_texts: Vec<String>,
    /// Secrets to replace in every event (the session sets it from the policy).
    redactor: Option<crate::secret::Redactor>,
}

fn read<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // read_unaligned: ring buffer data is only 8-byte aligned by contract.
    // SAFETY: length checked; `Pod` types are valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn cstr(buf: &[u8], len: u32) -> String {
    let b = &buf[..(len as usize).min(buf.len())];
    let b = b.split(|&c| c == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(b).into_owned()
}

impl Decoder {
    /// `resolve` names syscall numbers; `rule_texts[i]` is the profile's text of egress rule i.
    pub fn new(
        sandbox: &str,
        boot_to_unix_ns: i64,
        resolve: fn(u32) -> String,
        rule_texts: Vec<String>,
    ) -> Self {
        Self {
            sandbox: sandbox.into(),
            seq: 0,
            boot_to_unix_ns,
            redactor: None,
            pending: HashMap::new(),
            procs: HashMap::new(),
            names: HashMap::new(),
            resolve,
            rule_texts,
        }
    }

    pub fn events_so_far(&self) -> u64 {
        self.seq
    }

    fn name(&mut self, nr: u32) -> String {
        let resolve = self.resolve;
        self.names
            .entry(nr)
            .or_insert_with(|| {
                let n = resolve(nr);
                if n.is_empty() {
                    format!("syscall_{nr}")
                } else {
                    n
                }
            })
            .clone()
    }

    /// A new envelope (sequence number assigned when emitted).
    fn envelope(&mut self, h: &Header, kind: Kind) -> pb::Event {
        let p = self.procs.entry(h.tgid).or_default();
        if h.ns_tgid != 0 {
            p.ns_pid = h.ns_tgid;
        }
        let comm = p.comm.clone();
        let mut ancestry = Vec::new();
        let mut at = self.procs.get(&h.tgid).map_or(0, |p| p.parent);
        while at != 0 && ancestry.len() < 32 {
            let Some(p) = self.procs.get(&at) else { break };
            ancestry.push(p.ns_pid);
            at = p.parent;
        }
        pb::Event {
            seq: 0,
            time_unix_ns: (h.time_ns as i64 + self.boot_to_unix_ns).max(0) as u64,
            sandbox: self.sandbox.clone(),
            pid: h.ns_tgid,
            tid: h.ns_tid,
            host_pid: h.tgid,
            host_tid: h.tid,
            comm,
            ancestry,
            kind: Some(kind),
        }
    }

    /// Stamp the next sequence number and hand the event out.
    pub fn emit(&mut self, mut e: pb::Event, out: &mut Vec<pb::Event>) {
        self.seq += 1;
        e.seq = self.seq;
        if let Some(r) = &self.redactor {
            redact(r, &mut e);
        }
        out.push(e);
    }

    /// Replace the agent's secrets (see `secret::Redactor`) in every event from now on.
    pub fn redact_with(&mut self, r: crate::secret::Redactor) {
        self.redactor = Some(r);
    }

    /// Decode one ring-buffer record, appending finished events to `out`.
    pub fn record(&mut self, bytes: &[u8], out: &mut Vec<pb::Event>) {
        let Some(h) = read::<Header>(bytes) else { return };
        match h.kind {
            kind::SYS_ENTER => {
                let Some(r) = read::<SyscallHead>(bytes) else {
                    return;
                };
                if let Some(old) = self.pending.remove(&h.tid) {
                    self.emit(old, out);
                }
                let e = self.syscall(&r, &bytes[SYSCALL_HEAD..]);
                self.pending.insert(h.tid, e);
            }
            // A full record at exit (a denial), longer than an `ExitRecord`.
            kind::SYS_EXIT if bytes.len() >= SYSCALL_HEAD => {
                let Some(r) = read::<SyscallHead>(bytes) else {
                    return;
                };
                let e = match self.pending.remove(&h.tid) {
                    Some(e) => finish(e, r.nr, r.ret),
                    None => {
                        let e = self.syscall(&r, &bytes[SYSCALL_HEAD..]);
                        finish(e, r.nr, r.ret)
                    }
                };
                self.emit(e, out);
            }
            kind::SYS_EXIT => {
                let Some(r) = read::<ExitRecord>(bytes) else {
                    return;
                };
                let e = match self.pending.remove(&h.tid) {
                    Some(e) => e,
                    None => {
                        let name = self.name(r.nr);
                        self.envelope(
                            &h,
                            Kind::Syscall(pb::Syscall {
                                nr: r.nr,
                                name,
                                ..Default::default()
                            }),
                        )
                    }
                };
                let e = finish(e, r.nr, r.ret);
                self.emit(e, out);
            }
            kind::FORK | kind::EXEC | kind::EXIT => {
                if let Some(r) = read::<ProcHead>(bytes) {
                    self.proc(&r, bytes, out);
                }
            }
            kind::NET => {
                if let Some(r) = read::<NetRecord>(bytes) {
                    self.net(&r, out);
                }
            }
            _ => {}
        }
    }

    /// A syscall event from a record's head and its strings (`data`: the path, then the aux
    /// bytes right after it, as many as the ring record holds).
    fn syscall(&mut self, r: &SyscallHead, data: &[u8]) -> pb::Event {
        let path = &data[..(r.path_len as usize).min(data.len())];
        let rest = &data[path.len()..];
        let aux = &rest[..(r.aux_len as usize).min(rest.len())];
        let mut s = pb::Syscall {
            nr: r.nr,
            name: self.name(r.nr),
            args: r.args.to_vec(),
            path: cstr(path, r.path_len),
            truncated: r.flags & (sysflag::PATH_CUT | sysflag::AUX_CUT) != 0,
            ..Default::default()
        };
        if r.flags & sysflag::AUX_PATH != 0 {
            s.path2 = cstr(aux, r.aux_len);
        } else if r.flags & sysflag::AUX_SOCKADDR != 0 {
            s.addr = sockaddr(aux);
        } else if r.flags & sysflag::AUX_ARGV != 0 {
            s.argv = argv_of(aux);
        }
        self.envelope(&r.hdr, Kind::Syscall(s))
    }

    /// A process record: its head, and for an exec the whole record's `bytes` (its strings).
    fn proc(&mut self, r: &ProcHead, bytes: &[u8], out: &mut Vec<pb::Event>) {
        let h = r.hdr;
        let comm = cstr(&r.comm, 16);
        self.procs.entry(h.tgid).or_default().comm = comm;
        match h.kind {
            kind::FORK => {
                let thread = r.child_tid != r.child_tgid;
                if !thread {
                    let parent_comm = self
                        .procs
                        .get(&h.tgid)
                        .map(|p| p.comm.clone())
                        .unwrap_or_default();
                    self.procs.insert(
                        r.child_tgid,
                        Proc {
                            ns_pid: 0,
                            parent: h.tgid,
                            comm: parent_comm,
                        },
                    );
                }
                let e = self.envelope(
                    &h,
                    Kind::Fork(pb::ProcessFork {
                        child_pid: 0,
                        child_host_pid: r.child_tid,
                        thread,
                    }),
                );
                self.emit(e, out);
            }
            kind::EXEC => {
                let whole = read::<ProcRecord>(bytes);
                let whole = whole.as_ref();
                // The execve that led here is still pending (it completes in the new program).
                let argv = match self.pending.get(&h.tid).and_then(|p| p.kind.as_ref()) {
                    Some(Kind::Syscall(s)) => s.argv.clone(),
                    // A sandbox without syscall records: the probes read argv from the new
                    // program's memory.
                    _ => whole
                        .map(|w| argv_of(&w.argv[..(r.argv_len as usize).min(w.argv.len())]))
                        .unwrap_or_default(),
                };
                let filename = whole
                    .map(|w| cstr(&w.filename, r.filename_len))
                    .unwrap_or_default();
                let e = self.envelope(&h, Kind::Exec(pb::ProcessExec { filename, argv }));
                self.emit(e, out);
            }
            _ => {
                if let Some(p) = self.pending.remove(&h.tid) {
                    self.emit(p, out);
                }
                if r.group_dead == 1 {
                    let (status, signal) = if r.exit_code & 0x7f != 0 {
                        (0, (r.exit_code & 0x7f) as i32)
                    } else {
                        (((r.exit_code >> 8) & 0xff) as i32, 0)
                    };
                    let e = self.envelope(
                        &h,
                        Kind::Exit(pb::ProcessExit {
                            status,
                            signal,
                            process: true,
                        }),
                    );
                    self.emit(e, out);
                    self.procs.remove(&h.tgid);
                }
            }
        }
    }

    fn net(&mut self, r: &NetRecord, out: &mut Vec<pb::Event>) {
        let op = match r.op {
            netop::CONNECT4 | netop::CONNECT6 => "connect",
            netop::SENDMSG4 | netop::SENDMSG6 => "sendmsg",
            _ => "bind",
        };
        let ip = ip_text(r.family, &r.addr);
        let protocol = protocol_name(r.protocol);
        let rule = if r.rule == netrule::PROXIED {
            "proxy".to_string()
        } else {
            self.rule_texts.get(r.rule as usize).cloned().unwrap_or_default()
        };
        let e = self.envelope(
            &r.hdr,
            Kind::Net(pb::Network {
                op: op.into(),
                protocol,
                ip,
                port: r.port,
                allowed: r.allowed == 1,
                rule,
            }),
        );
        self.emit(e, out);
    }

    /// Emit what is still waiting for a result (the run ended first).
    pub fn flush(&mut self, out: &mut Vec<pb::Event>) {
        let mut left: Vec<pb::Event> = self.pending.drain().map(|(_, e)| e).collect();
        left.sort_by_key(|e| e.time_unix_ns);
        for e in left {
            self.emit(e, out);
        }
    }

    /// A summary event of syscall counts (by number) since the start.
    pub fn counts(&mut self, counts: &[(u32, u64)], last: bool, out: &mut Vec<pb::Event>) {
        let mut map = HashMap::new();
        let mut total = 0;
        for &(nr, n) in counts {
            let name = if nr == MAX_SYSCALL - 1 {
                "other".into()
            } else {
                self.name(nr)
            };
            *map.entry(name).or_insert(0) += n;
            total += n;
        }
        let e = self.bare(Kind::Counts(pb::SyscallCounts {
            counts: map,
            total,
            last,
        }));
        self.emit(e, out);
    }

    /// A summary event of traffic per remote end since the start.
    pub fn traffic(
        &mut self,
        remotes: &[(TrafficKey, Traffic)],
        untracked: u64,
        last: bool,
        out: &mut Vec<pb::Event>,
    ) {
        let mut remotes: Vec<pb::Remote> = remotes
            .iter()
            .map(|(k, t)| pb::Remote {
                protocol: protocol_name(k.protocol),
                ip: ip_text(k.family, &k.addr),
                port: k.port,
                bytes_out: t.bytes_out,
                packets_out: t.packets_out,
                bytes_in: t.bytes_in,
                packets_in: t.packets_in,
            })
            .collect();
        remotes.sort_by_key(|a| std::cmp::Reverse(a.bytes_out + a.bytes_in));
        let e = self.bare(Kind::Traffic(pb::TrafficCounts {
            remotes,
            untracked_packets: untracked,
            last,
        }));
        self.emit(e, out);
    }

    /// An event not tied to a process (losses, lifecycle, summaries).
    pub fn bare(&self, kind: Kind) -> pb::Event {
        pb::Event {
            time_unix_ns: super::unix_now_ns(),
            sandbox: self.sandbox.clone(),
            kind: Some(kind),
            ..Default::default()
        }
    }
}

/// The strings of an event that can carry what the agent typed or received: argv, paths,
/// summaries built from them, names and URLs.
/// NUL-separated argv strings as the probes copy them.
fn argv_of(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&c| c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn redact(r: &crate::secret::Redactor, e: &mut pb::Event) {
    match &mut e.kind {
        Some(Kind::Syscall(s)) => {
            r.field(&mut s.path);
            r.field(&mut s.path2);
            s.argv.iter_mut().for_each(|a| r.field(a));
        }
        Some(Kind::Exec(x)) => {
            r.field(&mut x.filename);
            x.argv.iter_mut().for_each(|a| r.field(a));
        }
        Some(Kind::Lifecycle(l)) => {
            r.field(&mut l.detail);
            l.command.iter_mut().for_each(|a| r.field(a));
        }
        Some(Kind::Detection(d)) => {
            r.field(&mut d.summary);
            r.field(&mut d.window);
        }
        Some(Kind::Response(x)) => r.field(&mut x.detail),
        Some(Kind::Http(h)) => {
            r.field(&mut h.path);
            r.field(&mut h.host);
        }
        Some(Kind::Connection(c)) => {
            r.field(&mut c.reason);
            r.field(&mut c.sni);
            r.field(&mut c.http_host);
        }
        Some(Kind::Dns(d)) => r.field(&mut d.name),
        Some(Kind::ModelRequest(m)) => m.messages.iter_mut().for_each(|x| r.field(&mut x.content)),
        Some(Kind::ModelResponse(m)) => {
            r.field(&mut m.text);
            m.tool_calls.iter_mut().for_each(|t| r.field(&mut t.input));
        }
        // The agent's own words: its request's target and reason.
        Some(Kind::Approval(a)) => {
            r.field(&mut a.target);
            r.field(&mut a.why);
            r.field(&mut a.rule);
        }
        Some(Kind::Grant(g)) => {
            r.field(&mut g.target);
            r.field(&mut g.reason);
        }
        _ => {}
    }
}

fn finish(mut e: pb::Event, nr: u32, ret: i64) -> pb::Event {
    if let Some(Kind::Syscall(s)) = &mut e.kind {
        if s.nr == nr {
            s.ret = ret;
            s.completed = true;
            s.denied = ret == -(libc::EPERM as i64) || ret == -(libc::EACCES as i64);
            if ret < 0 && ret > -4096 {
                s.errno = errno_name(-ret);
            }
        }
    }
    e
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
