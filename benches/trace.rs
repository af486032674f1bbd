//! The trace on one core: appending events (encode, BLAKE3 hash chain, an ed25519-signed
//! checkpoint every 4096 records) into the in-memory buffer the writer hands to write(2), and
//! verifying a whole trace (every hash, link and signature). Reports records per second
//! (criterion "elements"). The events are a recorded openat as the live pipeline builds it.

use cordon::events::pb;
use cordon::trace::{pb as tpb, verify, writer::Chain};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;

fn event(i: u64) -> pb::Event {
    pb::Event {
        seq: i,
        time_unix_ns: 1_790_000_000_000_000_000 + i * 1000,
        sandbox: "3f2a9c01b7de".into(),
        pid: 7,
        tid: 7,
        host_pid: 41_234,
        host_tid: 41_234,
        comm: "python3".into(),
        ancestry: vec![3, 1],
        kind: Some(pb::event::Kind::Syscall(pb::Syscall {
            nr: 257,
            name: "openat".into(),
            args: vec![u64::MAX - 99, 0x7ffd_1234_5678, 0x80000, 0],
            ret: 3,
            completed: true,
            path: "/usr/lib/python3.13/encodings/__init__.py".into(),
            ..Default::default()
        })),
    }
}

fn header(key: &SigningKey) -> tpb::Header {
    tpb::Header {
        sandbox: "3f2a9c01b7de".into(),
        public_key: cordon::keys::public_text(&key.verifying_key()),
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    const N: u64 = 100_000;
    let events: Vec<pb::Event> = (1..=N).map(event).collect();
    let key = SigningKey::from_bytes(&[11; 32]);

    let mut g = c.benchmark_group("trace");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("append", |b| {
        b.iter(|| {
            let mut chain = Chain::new(key.clone(), &header(&key));
            for e in &events {
                chain.event(e);
                // The pipeline hands the buffer to write(2) every drain; here it is dropped.
                if chain.pending().len() > 1 << 20 {
                    chain.clear();
                }
            }
            chain.records()
        });
    });

    let mut chain = Chain::new(key.clone(), &header(&key));
    for e in &events {
        chain.event(e);
    }
    chain.seal(0, String::new());
    let bytes = chain.pending().to_vec();
    let per_event = bytes.len() as f64 / N as f64;
    eprintln!(
        "trace of {N} openat events: {} bytes, {per_event:.1} bytes per event (with its frame, hash link and share of checkpoints)",
        bytes.len()
    );
    g.bench_function("verify", |b| {
        b.iter(|| {
            let r = verify::verify(&bytes, None, None);
            assert!(r.valid());
            r.intact
        });
    });
    g.finish();
}

criterion_group!(trace, benches);
criterion_main!(trace);
