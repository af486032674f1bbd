//! Criterion benches of the pure front half of a launch: resolving a profile, compiling it
//! to a policy, and compiling the seccomp filter. `benches/compare.sh` times whole launches.

use cordon::{identity, policy, profile};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::BTreeMap;

fn ctx() -> policy::Context {
    policy::Context {
        workspace: "/home/alice/proj".into(),
        home: "/home/alice".into(),
        owner_uid: 0,
        owner_gid: 0,
        agent_uid: identity::ROOT_CALLER_AGENT_ID,
        agent_gid: identity::ROOT_CALLER_AGENT_ID,
    }
}

fn benches(c: &mut Criterion) {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    c.bench_function("profile::load(default)", |b| {
        b.iter(|| profile::load("default").unwrap())
    });
    let p = profile::load("default").unwrap();
    c.bench_function("policy::compile(default)", |b| {
        b.iter(|| policy::compile(&p, &ctx(), &env).unwrap())
    });
    let pol = policy::compile(&p, &ctx(), &env).unwrap();
    c.bench_function("seccomp filter to BPF", |b| {
        b.iter(|| cordon::launch::compile_seccomp(&pol).unwrap())
    });
}

criterion_group!(policy_benches, benches);
criterion_main!(policy_benches);
