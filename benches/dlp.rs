//! Data loss prevention on one core: the proxy's search of outbound plaintext (canaries raw
//! and base64, private keys, token formats) over request bodies shaped like an agent's (model
//! API JSON with code in it, lockfile metadata), in bytes per second. The issue's floor is
//! 500 MB/s per core.

use cordon::session::proxy::dlp::{Canary, Scanner};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// 1 MiB of text with the texture of what agents send: JSON with escaped source code,
/// hashes, UUIDs and words that start like tokens but are not (deterministic).
fn corpus() -> Vec<u8> {
    let chunk = concat!(
        r#"{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"fn main() {\n    let sk = Sketch::new();\n    println!(\"{}\", sk.len());\n}\n"}]},"#,
        r#"{"integrity":"sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUR","resolved":"https://registry.npmjs.org/ghost/-/ghost-1.0.0.tgz"},"#,
        r#"{"id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","ask":"mask-and-skip","akia":"not a key","sum":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},"#,
    );
    let mut v = Vec::with_capacity(1 << 20);
    while v.len() < (1 << 20) {
        v.extend_from_slice(chunk.as_bytes());
    }
    v.truncate(1 << 20);
    v
}

fn scan(c: &mut Criterion) {
    let canaries = vec![
        Canary {
            value: "AKIAQWERTYUIOPASDFGH".into(),
            what: "AWS access key".into(),
            planted: "~/.aws/credentials".into(),
        },
        Canary {
            value: "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY12".into(),
            what: "AWS secret key".into(),
            planted: "~/.aws/credentials".into(),
        },
        Canary {
            value: "ghp_0123456789abcdefghijABCDEFGHIJ012345".into(),
            what: "GitHub token".into(),
            planted: "~/.netrc".into(),
        },
    ];
    let s = Scanner::new(&canaries, Vec::new());
    let data = corpus();
    assert!(
        s.scan(&data, "api.anthropic.com").is_none(),
        "the corpus is benign"
    );
    let mut g = c.benchmark_group("dlp");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("scan 1 MiB of agent request bodies", |b| {
        b.iter(|| s.scan(std::hint::black_box(&data), "api.anthropic.com"))
    });
    g.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
