//! The userspace half of the event pipeline on one core: raw probe records → decoder → the
//! bounded broadcast bus → one consumer. Reports events per second (criterion "elements").
//! The records are the common mix: a recorded openat (entry with path + exit) and a
//! denied syscall recorded whole at exit.

use cordon::events::{decode::Decoder, pb};
use cordon_probe_common::{kind, ExitRecord, Header, SyscallHead, SyscallRecord, AUX_LEN, PATH_LEN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

fn bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: the bytes of a plain-data record.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
}

fn records(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(2 * n);
    for i in 0..n {
        let tid = 1000 + u32::try_from(i % 8).unwrap();
        let hdr = |k| Header {
            kind: k,
            tgid: 1000,
            tid,
            ns_tgid: 2,
            ns_tid: 2,
            _pad: 0,
            time_ns: i as u64,
        };
        let mut r = SyscallRecord {
            head: SyscallHead {
                hdr: hdr(kind::SYS_ENTER),
                nr: 257,
                flags: 0,
                path_len: 24,
                aux_len: 0,
                ret: 0,
                args: [0; 6],
            },
            data: [0; PATH_LEN + AUX_LEN],
        };
        r.data[..23].copy_from_slice(b"/usr/lib/python3/os.pyc");
        if i % 10 == 9 {
            r.head.hdr.kind = kind::SYS_EXIT;
            r.head.ret = -13;
            out.push(r.used().to_vec());
        } else {
            out.push(r.used().to_vec());
            out.push(bytes(&ExitRecord {
                hdr: hdr(kind::SYS_EXIT),
                nr: 257,
                _pad: 0,
                ret: 3,
            }));
        }
    }
    out
}

fn benches(c: &mut Criterion) {
    const N: usize = 100_000;
    let recs = records(N);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut d = Decoder::new("bench", 0, |_| "openat".into(), vec![]);
            let mut out = Vec::with_capacity(N);
            for r in &recs {
                d.record(r, &mut out);
            }
            out.len()
        })
    });
    g.bench_function("decode + bus + consumer", |b| {
        let (tx, mut rx) =
            tokio::sync::broadcast::channel::<Arc<pb::Event>>(cordon::session::control::BUS_CAPACITY);
        b.iter(|| {
            let mut d = Decoder::new("bench", 0, |_| "openat".into(), vec![]);
            let mut out = Vec::with_capacity(4096);
            let mut seen = 0usize;
            for chunk in recs.chunks(4096) {
                for r in chunk {
                    d.record(r, &mut out);
                }
                for e in out.drain(..) {
                    let _ = tx.send(Arc::new(e));
                }
                while let Ok(e) = rx.try_recv() {
                    seen += usize::from(e.seq % 2 == 1);
                }
            }
            seen
        })
    });
    g.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
