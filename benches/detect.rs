//! The monitor on one core: offline scoring of a syscall sequence against a learned baseline
//! (syscalls per second, criterion "elements"; the floor is 1 M/s), for kNN (the
//! default), the locality frames and plain STIDE, on one long sequence and on many short ones, and the rule detectors over a stream of recorded events (events per
//! second) as the pipeline runs them.

use cordon::detect::baseline::{Alphabet, Method, Model};
use cordon::events::pb;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A syscall sequence with the texture of a real one: loops of a few dozen calls, with
/// occasional detours (a deterministic generator, so every run measures the same input).
fn sequence(n: usize, seed: u64) -> Vec<u32> {
    const LOOP: [u32; 12] = [0, 1, 3, 257, 5, 9, 10, 11, 0, 1, 202, 228];
    let mut x = seed;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(50) {
                (x % 300) as u32
            } else {
                LOOP[i % LOOP.len()]
            }
        })
        .collect()
}

fn event(i: u64) -> pb::Event {
    let (path, flags) = match i % 4 {
        0 => ("/usr/lib/python3/dist-packages/x.py", 0x80000),
        1 => ("src/main.rs", 0x241),
        2 => ("../target/debug/build/out.o", 0x241),
        _ => ("/etc/ld.so.cache", 0x80000),
    };
    pb::Event {
        seq: i,
        time_unix_ns: 1_790_000_000_000_000_000 + i * 10_000,
        pid: 7,
        host_pid: 41_234,
        host_tid: 41_234,
        comm: "cc1".into(),
        kind: Some(pb::event::Kind::Syscall(pb::Syscall {
            nr: 257,
            name: "openat".into(),
            args: vec![u64::MAX - 99, 0, flags],
            ret: 3,
            completed: true,
            path: path.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let mut model = Model::new(Alphabet::Syscalls);
    for k in 0..4 {
        model.train(&sequence(200_000, 11 + k), "bench");
    }
    let probe = sequence(N, 99);
    let mut g = c.benchmark_group("detect");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("score_knn", |b| b.iter(|| model.score(&probe, Method::Knn).score));
    g.bench_function("score_frames", |b| {
        b.iter(|| model.score(&probe, Method::Frames).score)
    });
    g.bench_function("score_stide", |b| {
        b.iter(|| model.score(&probe, Method::Stide).score)
    });

    // kNN's cost per trace grows with the number of training traces: a dataset's shape (800
    // training traces, short traces scored one by one) is its worst case.
    let mut wide = Model::new(Alphabet::Syscalls);
    for k in 0..800usize {
        wide.train(&sequence(400 + (k % 7) * 100, 1000 + k as u64), "bench");
    }
    let short: Vec<Vec<u32>> = (0..2500).map(|k| sequence(400, 5000 + k)).collect();
    g.throughput(Throughput::Elements(2500 * 400));
    g.bench_function("score_knn_2500x400_vs_800", |b| {
        b.iter(|| {
            short
                .iter()
                .map(|s| wide.score(s, Method::Knn).score)
                .sum::<f64>()
        })
    });
    g.bench_function("score_stide_2500x400_vs_800", |b| {
        b.iter(|| {
            short
                .iter()
                .map(|s| wide.score(s, Method::Stide).score)
                .sum::<f64>()
        })
    });
    g.throughput(Throughput::Elements(N as u64));

    const E: u64 = 200_000;
    let events: Vec<pb::Event> = (1..=E).map(event).collect();
    let p = cordon::profile::load("default").unwrap();
    let cfg = cordon::policy::monitor::Config::compile(
        &p.monitor,
        &["/usr".into(), "/w".into()],
        p.network.mode,
        |s| Ok(s.replace("{home}", "/home/u").replace("{workspace}", "/w")),
    )
    .unwrap();
    g.throughput(Throughput::Elements(E));
    g.bench_function("rules", |b| {
        b.iter(|| {
            let mut d = cordon::detect::Detector::new(&cfg, Box::new(|_, _| Some("/w".to_string())));
            let mut out = Vec::new();
            for e in &events {
                d.observe(e, &mut out);
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
