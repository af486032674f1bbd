//! The decoder's tests on synthetic records laid out as the probes write them.

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
