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
mod tests {
    use super::*;
    use crate::kernel::OPENAT;
    use cordon_probe_common::{SyscallRecord, AUX_LEN, PATH_LEN};

    fn bytes<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-data record.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    fn hdr(kind: u32, tgid: u32, tid: u32) -> Header {
        Header {
            kind,
            tgid,
            tid,
            ns_tgid: tgid - 1000,
            ns_tid: tid - 1000,
            _pad: 0,
            time_ns: 5,
        }
    }

    fn open_record(kind: u32, ret: i64) -> SyscallRecord {
        let mut r = SyscallRecord {
            head: SyscallHead {
                hdr: hdr(kind, 1002, 1002),
                nr: OPENAT,
                flags: 0,
                path_len: 12,
                aux_len: 0,
                ret,
                args: [0; 6],
            },
            data: [0; PATH_LEN + AUX_LEN],
        };
        r.data[..11].copy_from_slice(b"/etc/shadow");
        r
    }

    fn decoder() -> Decoder {
        Decoder::new(
            "sb",
            0,
            |nr| if nr == OPENAT { "openat" } else { "" }.into(),
            vec![],
        )
    }

    #[test]
    fn enter_and_exit_join_into_one_denied_syscall() {
        let mut d = decoder();
        let mut out = vec![];
        d.record(open_record(kind::SYS_ENTER, 0).used(), &mut out);
        assert!(out.is_empty(), "waits for the result");
        let exit = ExitRecord {
            hdr: hdr(kind::SYS_EXIT, 1002, 1002),
            nr: OPENAT,
            _pad: 0,
            ret: -13,
        };
        d.record(&bytes(&exit), &mut out);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!((e.seq, e.pid, e.host_pid), (1, 2, 1002));
        let Some(Kind::Syscall(s)) = &e.kind else {
            panic!("{e:?}")
        };
        assert_eq!(
            (s.name.as_str(), s.path.as_str(), s.ret),
            ("openat", "/etc/shadow", -13)
        );
        assert!(s.completed && s.denied);
        assert_eq!(s.errno, "EACCES");
    }

    #[test]
    fn denial_without_entry_is_one_full_record() {
        let mut d = decoder();
        let mut out = vec![];
        d.record(open_record(kind::SYS_EXIT, -1).used(), &mut out);
        let Some(Kind::Syscall(s)) = &out[0].kind else {
            panic!()
        };
        assert_eq!(
            (s.path.as_str(), s.errno.as_str(), s.denied),
            ("/etc/shadow", "EPERM", true)
        );
    }

    /// A process record of `sh` (host pid `tgid`): `child` for forks, `code` for exits.
    fn proc_rec(kind: u32, tgid: u32, child: u32, code: u32) -> ProcHead {
        ProcHead {
            hdr: hdr(kind, tgid, tgid),
            child_tid: child,
            child_tgid: child,
            exit_code: code,
            group_dead: 1,
            comm: *b"sh\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            filename_len: 0,
            argv_len: 0,
        }
    }

    #[test]
    fn an_exec_without_its_execve_takes_argv_from_the_record() {
        let mut d = decoder();
        let mut out = vec![];
        let mut rec = ProcRecord {
            head: proc_rec(kind::EXEC, 1001, 0, 0),
            filename: [0; PATH_LEN],
            argv: [0; AUX_LEN],
        };
        rec.head.filename_len = 13;
        rec.filename[..13].copy_from_slice(b"/usr/bin/cat\0");
        let args = b"cat\0/etc/hostname\0";
        rec.argv[..args.len()].copy_from_slice(args);
        rec.head.argv_len = u32::try_from(args.len()).unwrap();
        d.record(&bytes(&rec), &mut out);
        let Some(Kind::Exec(x)) = &out.last().unwrap().kind else {
            panic!()
        };
        assert_eq!(
            (x.filename.as_str(), x.argv.clone()),
            ("/usr/bin/cat", vec!["cat".to_string(), "/etc/hostname".into()])
        );
    }

    #[test]
    fn fork_builds_ancestry_and_exit_reports_status() {
        let mut d = decoder();
        let mut out = vec![];
        d.record(&bytes(&proc_rec(kind::FORK, 1001, 1002, 0)), &mut out);
        d.record(&bytes(&proc_rec(kind::FORK, 1002, 1003, 0)), &mut out);
        d.record(&bytes(&proc_rec(kind::EXIT, 1003, 0, 3 << 8)), &mut out);
        let exit = out.last().unwrap();
        assert_eq!(exit.ancestry, vec![2, 1]);
        let Some(Kind::Exit(x)) = &exit.kind else { panic!() };
        assert_eq!((x.status, x.signal, x.process), (3, 0, true));
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    }

    #[test]
    fn a_proxied_connect_is_allowed_with_rule_proxy() {
        let mut d = Decoder::new("sb", 0, |_| String::new(), vec!["10.0.0.0/8:443".into()]);
        let mut out = vec![];
        let rec = |allowed, rule| NetRecord {
            hdr: hdr(kind::NET, 1002, 1002),
            op: netop::CONNECT4,
            allowed,
            protocol: 6,
            port: 443,
            addr: [u32::from_ne_bytes([203, 0, 113, 7]), 0, 0, 0],
            rule,
            family: 4,
        };
        d.record(&bytes(&rec(1, netrule::PROXIED)), &mut out);
        d.record(&bytes(&rec(1, 0)), &mut out);
        d.record(&bytes(&rec(0, netrule::NONE)), &mut out);
        let nets: Vec<_> = out
            .iter()
            .map(|e| match &e.kind {
                Some(Kind::Net(n)) => (n.ip.as_str(), n.allowed, n.rule.as_str()),
                k => panic!("{k:?}"),
            })
            .collect();
        assert_eq!(
            nets,
            vec![
                ("203.0.113.7", true, "proxy"),
                ("203.0.113.7", true, "10.0.0.0/8:443"),
                ("203.0.113.7", false, ""),
            ]
        );
    }

    /// The probes put a record's aux bytes right after its path and only the bytes used in
    /// the ring; the decoder finds both, and a record cut short loses only what is missing.
    #[test]
    fn aux_follows_the_path_in_a_record_of_the_bytes_used() {
        let mut r = open_record(kind::SYS_EXIT, -1);
        r.head.path_len = 5;
        r.head.aux_len = 5;
        r.head.flags = sysflag::AUX_PATH;
        r.data[..10].copy_from_slice(b"/a/b\0/c/d\0");
        let used = r.used();
        assert_eq!(used.len(), SYSCALL_HEAD + 10);
        let mut d = decoder();
        let mut out = vec![];
        d.record(used, &mut out);
        d.record(&used[..SYSCALL_HEAD + 7], &mut out);
        let got: Vec<(&str, &str)> = out
            .iter()
            .map(|e| match &e.kind {
                Some(Kind::Syscall(s)) => (s.path.as_str(), s.path2.as_str()),
                k => panic!("{k:?}"),
            })
            .collect();
        assert_eq!(got, vec![("/a/b", "/c/d"), ("/a/b", "/c")]);
    }

    #[test]
    fn truncated_bytes_are_ignored() {
        let mut d = decoder();
        let mut out = vec![];
        d.record(&[1, 0, 0], &mut out);
        d.record(&bytes(&open_record(kind::SYS_ENTER, 0))[..100], &mut out);
        assert!(out.is_empty());
    }
}
