//! The trace every run leaves: real runs, then the file is verified, tampered with, cut,
//! left by a killed cordon, and written to a full disk.

mod common;

use common::*;
use cordon::trace::verify::{self, frame_bounds, Kind};
use cordon::trace::{hash, pb, MAGIC};
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Run `script` under the default profile with its trace at `trace`.
fn traced(s: &Scratch, trace: &Path, extra: &[&str], script: &str) -> Output {
    let t = trace.to_string_lossy().into_owned();
    let mut args = vec!["--trace", t.as_str()];
    args.extend_from_slice(extra);
    output(run_cmd("default", s.path(), &args, &["/bin/sh", "-c", script]))
}

/// A run whose trace cannot be started: exit 125 with `why` on stderr, and no agent ran.
fn refused_before_any_agent(s: &Scratch, trace: &Path, why: &str) {
    let marker = s.path().join("ran");
    let out = traced(s, trace, &[], &format!("touch {}", marker.display()));
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
    assert!(!marker.exists(), "an agent ran");
}

fn verify_cli(trace: &Path, extra: &[&str]) -> Output {
    let mut c = cordon_command();
    c.args(["trace", "verify"]).arg(trace).args(extra);
    output(c)
}

fn check(bytes: &[u8]) -> Option<(Kind, u64)> {
    verify::verify(bytes, None, None)
        .damage
        .map(|d| (d.kind, d.record))
}

fn splice(bytes: &[u8], parts: &[std::ops::Range<usize>]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for p in parts {
        out.extend_from_slice(&bytes[p.clone()]);
    }
    out
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    [
        &len.to_le_bytes()[..],
        &(!len).to_le_bytes(),
        payload,
        &hash(payload),
    ]
    .concat()
}

/// What someone without the key can do: change record `from`, then recompute every hash and
/// `prev` after it so the chain links again. Records listed in `drop` are left out.
fn rehash(bytes: &[u8], from: usize, drop: &[usize], change: impl FnOnce(&mut pb::Record)) -> Vec<u8> {
    let f = frame_bounds(bytes);
    let mut out = splice(bytes, &f[..from]);
    let mut prev = hash(&bytes[f[from - 1].start + 8..f[from - 1].end - 32]);
    let mut change = Some(change);
    let mut seq = from as u64;
    for (i, r) in f.iter().enumerate().skip(from) {
        if drop.contains(&i) {
            continue;
        }
        let mut rec = pb::Record::decode(&bytes[r.start + 8..r.end - 32]).unwrap();
        if i == from {
            (change.take().unwrap())(&mut rec);
        }
        rec.prev = prev.to_vec();
        rec.seq = seq;
        seq += 1;
        let payload = rec.encode_to_vec();
        prev = hash(&payload);
        out.extend_from_slice(&frame(&payload));
    }
    out
}

/// Records of a trace, decoded (for finding checkpoints and events by position).
fn records(bytes: &[u8]) -> Vec<pb::Record> {
    frame_bounds(bytes)
        .iter()
        .map(|r| pb::Record::decode(&bytes[r.start + 8..r.end - 32]).unwrap())
        .collect()
}

fn is_checkpoint(r: &pb::Record) -> bool {
    matches!(r.body, Some(pb::record::Body::Checkpoint(_)))
}

#[test]
fn a_run_leaves_a_sealed_trace_that_verifies_and_replays() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let out = traced(
        &s,
        &t,
        &["--on-behalf-of", "auditor@example.org"],
        "cat /etc/hostname >/dev/null; echo x > f; rm f; exit 3",
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("trace {}", t.display())),
        "{}",
        stderr(&out)
    );

    let v = verify_cli(&t, &[]);
    assert_eq!(v.status.code(), Some(0), "{}", stdout(&v));
    assert!(stdout(&v).contains("VALID"), "{}", stdout(&v));
    // Against the host's key, as an auditor would.
    let mut show = cordon_command();
    show.args(["key", "show"]);
    let host_key = stdout(&output(show)).trim().to_string();
    assert!(host_key.starts_with("ed25519:"));
    assert_eq!(verify_cli(&t, &["--pubkey", &host_key]).status.code(), Some(0));
    let other = cordon::keys::public_text(&ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key());
    let wrong = verify_cli(&t, &["--pubkey", &other]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stdout(&wrong).contains("wrong key"), "{}", stdout(&wrong));

    let bytes = std::fs::read(&t).unwrap();
    let r = verify::verify(&bytes, None, None);
    let h = r.header.as_ref().unwrap();
    assert_eq!(h.on_behalf_of, "auditor@example.org");
    assert_eq!(h.command[0], "/bin/sh");
    assert_eq!(h.profile_name, "default");
    assert!(h.append_only, "{}", h.append_only_detail);
    assert!(h.monitored);
    assert!(h.policy.contains("[filesystem]"), "{}", h.policy);
    assert_eq!(h.public_key, host_key);
    // The profile texts recorded are the ones its hash was computed over.
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    for src in &h.profile_sources {
        sha.update(src.text.as_bytes());
    }
    assert_eq!(format!("{:x}", sha.finalize()), h.profile_sha256);
    let seal = r.seal.as_ref().unwrap();
    assert_eq!(seal.exit_code, 3);
    assert_eq!(seal.events, r.events);
    // Every event of the live stream is in the trace — whole, or as a routine read in a
    // summary — and the numbers have no gaps.
    let recs = verify::records(&bytes, &r);
    let mut seqs: Vec<u64> = cordon::trace::show::events(&recs).map(|e| e.seq).collect();
    let summaries: Vec<&pb::ReadSummary> = recs
        .iter()
        .filter_map(|rec| match &rec.body {
            Some(pb::record::Body::Reads(x)) => Some(x),
            _ => None,
        })
        .collect();
    seqs.extend(summaries.iter().flat_map(|x| x.seqs.iter().copied()));
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        seal.summarised,
        summaries.iter().map(|x| x.seqs.len() as u64).sum::<u64>()
    );
    // cat's read of /etc/hostname is a routine read: its path is in a summary…
    let read = summaries
        .iter()
        .flat_map(|x| &x.paths)
        .find(|p| p.path == "/etc/hostname")
        .expect("/etc/hostname in a read summary");
    assert!(read.opened >= 1 && !read.host_pids.is_empty());
    // …the shell's `> f` (O_WRONLY|O_CREAT|O_TRUNC) is recorded whole.
    let created = cordon::trace::show::events(&recs).any(|e| {
        matches!(&e.kind, Some(cordon::events::pb::event::Kind::Syscall(sc))
            if (sc.path == "f" || sc.path.ends_with("/f")) && sc.name.starts_with("open"))
    });
    assert!(created, "the write-open of f is an event");

    // Replayed with the live stream's formatting.
    let mut ev = cordon_command();
    ev.args(["events", "--kind", "exec"]).arg(&t);
    let ev = output(ev);
    assert_eq!(ev.status.code(), Some(0), "{}", stderr(&ev));
    assert!(stdout(&ev).contains("/cat"), "{}", stdout(&ev));
    let mut js = cordon_command();
    js.args(["trace", "show", "--format", "json"]).arg(&t);
    let js = stdout(&output(js));
    let lines: Vec<serde_json::Value> = js.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines[0].get("header").is_some());
    assert!(lines.last().unwrap().get("seal").is_some());
    assert!(
        js.contains("\"unlinkat\"") || js.contains("\"unlink\""),
        "the rm is recorded"
    );
}

#[test]
fn traces_go_to_a_root_only_directory_by_default_and_are_never_overwritten() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let dir = s.path().join("state/traces");
    let mut c = run_cmd("default", s.path(), &[], &["/bin/true"]);
    c.env("CORDON_TRACE_DIR", &dir);
    let out = output(c);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(stderr(&out).contains(&files[0].display().to_string()));
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The kernel keeps it append-only: even root cannot rewrite it in place.
    let rewrite = std::fs::OpenOptions::new().write(true).open(&files[0]);
    assert_eq!(rewrite.unwrap_err().raw_os_error(), Some(libc::EPERM));

    // An existing file is never a trace target.
    refused_before_any_agent(&s, &files[0], "cannot create the trace");
}

#[test]
fn tampering_with_a_real_trace_is_detected_with_its_kind_and_record() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    // Events spread over ~2.5 s, so time-based checkpoints fall inside the run.
    let out = traced(
        &s,
        &t,
        &[],
        "for i in 1 2 3 4 5; do cat /etc/hostname /etc/hostname >/dev/null; cat /etc/hostname >/dev/null; cat /etc/hostname >/dev/null; sleep 0.5; done",
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let bytes = std::fs::read(&t).unwrap();
    assert_eq!(check(&bytes), None, "the untouched trace verifies");
    let f = frame_bounds(&bytes);
    let n = f.len();
    assert!(n > 100, "{n} records");

    for k in [1, 5, n / 2, n - 2, n - 1] {
        let mut parts = f.clone();
        parts.remove(k);
        let want = if k == n - 1 { Kind::Unsealed } else { Kind::Deleted };
        let got = check(&splice(&bytes, &parts));
        assert_eq!(
            got,
            Some((want, if k == n - 1 { k as u64 - 1 } else { k as u64 })),
            "delete {k}"
        );
    }
    for k in [1, 7, n / 2, n - 3] {
        let mut parts = f.clone();
        parts.swap(k, k + 1);
        assert_eq!(
            check(&splice(&bytes, &parts)),
            Some((Kind::Reordered, k as u64)),
            "swap {k}"
        );
    }
    for (copy, at) in [(3, 10), (n / 2, n / 2 + 5), (n - 1, 20)] {
        let mut parts = f.clone();
        parts.insert(at, f[copy].clone());
        assert_eq!(
            check(&splice(&bytes, &parts)),
            Some((Kind::Inserted, at as u64)),
            "insert {copy} at {at}"
        );
    }
    for (k, r) in f.iter().enumerate() {
        if k > 0 {
            assert_eq!(
                check(&bytes[..r.start]),
                Some((Kind::Unsealed, k as u64 - 1)),
                "cut before {k}"
            );
        }
        for at in [r.start + 3, r.start + 8, (r.start + r.end) / 2, r.end - 1] {
            assert_eq!(
                check(&bytes[..at]),
                Some((Kind::Truncated, k as u64)),
                "cut at {at}"
            );
        }
    }
    // Byte flips at 400 pseudo-random positions (xorshift, fixed seed).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let at = usize::try_from(x % bytes.len() as u64).unwrap();
        let mut m = bytes.clone();
        m[at] ^= 1 << (x >> 61);
        let record = f.iter().position(|r| r.contains(&at)).map_or(0, |k| k as u64);
        assert_eq!(check(&m), Some((Kind::Modified, record)), "flip at byte {at}");
    }

    // A forger without the key: change an event after the first checkpoint and re-hash the
    // rest. The chain links again, the next checkpoint's signature does not.
    let recs = records(&bytes);
    let first_cp = recs.iter().position(is_checkpoint).unwrap();
    assert!(
        first_cp < n - 3,
        "a checkpoint before the end (at {first_cp} of {n})"
    );
    let target = (first_cp..n)
        .find(|i| matches!(recs[*i].body, Some(pb::record::Body::Event(_))))
        .unwrap();
    let forged = rehash(&bytes, target, &[], |r| {
        if let Some(pb::record::Body::Event(e)) = &mut r.body {
            e.comm = "innocent".into();
        }
    });
    assert_eq!(check(&forged), Some((Kind::Modified, first_cp as u64 + 1)));
    // …and dropping every later checkpoint and the seal leaves it unsealed, not valid.
    let later: Vec<usize> = (first_cp + 1..n)
        .filter(|i| is_checkpoint(&recs[*i]) || *i == n - 1)
        .collect();
    let stripped = rehash(&bytes, target, &later, |r| {
        if let Some(pb::record::Body::Event(e)) = &mut r.body {
            e.comm = "innocent".into();
        }
    });
    assert_eq!(check(&stripped).map(|d| d.0), Some(Kind::Unsealed));

    let mut parts = f.clone();
    parts.remove(5);
    let damaged = s.path().join("damaged.trace");
    std::fs::write(&damaged, splice(&bytes, &parts)).unwrap();
    let v = verify_cli(&damaged, &[]);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stdout(&v).contains("INVALID: deleted at record 5"),
        "{}",
        stdout(&v)
    );
}

#[test]
fn a_whole_trace_rewritten_with_another_key_passes_only_without_the_hosts_key() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    assert_eq!(traced(&s, &t, &[], "true").status.code(), Some(0));
    let bytes = std::fs::read(&t).unwrap();
    // Re-sign every checkpoint and the seal with a key of the forger's own, named in a
    // rewritten header.
    let mine = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let mut prev = [0u8; 32];
    let mut out = MAGIC.to_vec();
    for mut rec in records(&bytes) {
        rec.prev = prev.to_vec();
        match &mut rec.body {
            Some(pb::record::Body::Header(h)) => {
                h.public_key = cordon::keys::public_text(&mine.verifying_key());
            }
            Some(pb::record::Body::Checkpoint(c)) => {
                c.chain = prev.to_vec();
                cordon::trace::sign_head(&mine, c);
            }
            Some(pb::record::Body::Seal(x)) => {
                x.chain = prev.to_vec();
                cordon::trace::sign_seal(&mine, x);
            }
            _ => {}
        }
        let payload = rec.encode_to_vec();
        prev = hash(&payload);
        out.extend_from_slice(&frame(&payload));
    }
    let forged = s.path().join("forged.trace");
    std::fs::write(&forged, out).unwrap();
    // Without an outside key, a full rewrite is indistinguishable: documented, and shown here.
    assert_eq!(verify_cli(&forged, &[]).status.code(), Some(0));
    let mut show = cordon_command();
    show.args(["key", "show"]);
    let host_key = stdout(&output(show)).trim().to_string();
    let v = verify_cli(&forged, &["--pubkey", &host_key]);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stdout(&v).contains("INVALID: wrong key at record 0"),
        "{}",
        stdout(&v)
    );
}

#[test]
fn a_head_stored_elsewhere_catches_a_cut_after_the_last_checkpoint() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6; do cat /etc/hostname >/dev/null; sleep 0.4; done",
        ],
    );
    let mut child = c.spawn().unwrap();
    // While it runs, someone stores the head (the first checkpoint comes ≤ 1 s in).
    let mut head = String::new();
    assert!(eventually(5000, || {
        let mut h = cordon_command();
        h.args(["trace", "head"]).arg(&t);
        let o = output(h);
        head = stdout(&o).trim().to_string();
        o.status.success()
    }));
    assert!(child.wait().unwrap().success());
    let bytes = std::fs::read(&t).unwrap();
    let head_seq: usize = head.split_whitespace().nth(2).unwrap().parse().unwrap();
    let head_file = s.file("head.txt", &head);
    let hf = head_file.to_string_lossy().into_owned();
    // The whole trace still extends the head.
    assert_eq!(verify_cli(&t, &["--head", &hf]).status.code(), Some(0));
    // Cut right after the head's record: without the head that is only "unsealed"…
    let f = frame_bounds(&bytes);
    let cut = s.path().join("cut.trace");
    std::fs::write(&cut, &bytes[..f[head_seq].start]).unwrap();
    let v = verify_cli(&cut, &[]);
    assert!(stdout(&v).contains("INVALID: unsealed"), "{}", stdout(&v));
    // …with it, records the head vouched for are missing: truncated.
    let v = verify_cli(&cut, &["--head", &head]);
    assert_eq!(v.status.code(), Some(1));
    assert!(
        stdout(&v).contains(&format!("INVALID: truncated at record {head_seq}")),
        "{}",
        stdout(&v)
    );
}

#[test]
fn a_killed_cordon_leaves_a_trace_that_verifies_up_to_its_last_record_and_says_unsealed() {
    require_root();
    let s = Scratch::new();
    let t = s.path().join("run.trace");
    let needle = "trace-crash-marker-5821";
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &[
            "/bin/sh",
            "-c",
            &format!("while :; do cat /etc/hostname >/dev/null; done # {needle}"),
        ],
    );
    let mut child = c.spawn().unwrap();
    assert!(eventually(10_000, || std::fs::metadata(&t).is_ok_and(|m| m.len() > 200_000)));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(5000, || host_pids_with(needle).is_empty()),
        "the agent died with cordon"
    );
    let bytes = std::fs::read(&t).unwrap();
    let r = verify::verify(&bytes, None, None);
    let d = r.damage.clone().unwrap();
    assert!(matches!(d.kind, Kind::Unsealed | Kind::Truncated), "{d}");
    // Every complete record is recovered: all frames but a torn one.
    let whole = frame_bounds(&bytes).len();
    assert_eq!(r.intact, whole);
    assert_eq!(
        d.record,
        if d.kind == Kind::Unsealed {
            whole as u64 - 1
        } else {
            whole as u64
        }
    );
    assert!(r.events > 100);
    let v = verify_cli(&t, &[]);
    assert_eq!(v.status.code(), Some(1));
    assert!(stdout(&v).contains("unsealed"), "{}", stdout(&v));
}

/// A tmpfs of `size` mounted on a scratch directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(st.success());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        clear_append_only(&self.0);
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_sandbox_and_keeps_what_was_written() {
    require_root();
    let s = Scratch::new();
    let disk = Tmpfs::mount(s.path().join("full"), "256k");
    let t = disk.0.join("run.trace");
    let needle = "trace-full-marker-7730";
    let mut c = run_cmd(
        "default",
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &[
            "/bin/sh",
            "-c",
            &format!("while :; do cat /etc/hostname >/dev/null; done # {needle}"),
        ],
    );
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let status = wait_within(&mut child, 30_000);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_ne!(status.code(), Some(0), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("frozen, then killed"), "{err}");
    assert!(host_pids_with(needle).is_empty(), "no agent process is left");
    // Everything written before the disk filled is intact.
    let bytes = std::fs::read(&t).unwrap();
    let r = verify::verify(&bytes, None, None);
    let d = r.damage.unwrap();
    assert!(matches!(d.kind, Kind::Unsealed | Kind::Truncated), "{d}");
    assert!(r.events > 100, "{} events kept", r.events);

    // A disk too small for even the header: no agent runs.
    let tiny = Tmpfs::mount(s.path().join("tiny"), "4k");
    refused_before_any_agent(&s, &tiny.0.join("t.trace"), "No space left on device");
}

#[test]
fn the_seal_records_what_cordon_decided_about_the_run() {
    require_root();
    let s = Scratch::new();
    let p = profile_file(&s, "short", "[limits]\nwall_clock = \"1s\"\n");
    let t = s.path().join("run.trace");
    let out = output(run_cmd(
        &p,
        s.path(),
        &["--trace", &t.to_string_lossy()],
        &["/bin/sleep", "30"],
    ));
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "{}", stderr(&out));
    let bytes = std::fs::read(&t).unwrap();
    let r = verify::verify(&bytes, None, None);
    assert!(r.valid(), "{:?}", r.damage);
    let seal = r.seal.unwrap();
    assert_eq!(seal.exit_code, 128 + libc::SIGKILL);
    assert!(
        seal.detail.contains("wall-clock limit of 1s was reached"),
        "{}",
        seal.detail
    );
}

/// Issue 14: an API key passed in the environment, used on the agent's command lines and in a
/// file name, and a token-shaped string on cordon's own command line never appear in any byte
/// of the trace, the `--events` stream, `trace show` or cordon's stderr.
#[test]
fn secrets_never_reach_the_trace_the_stream_or_stderr() {
    require_root();
    let s = Scratch::new();
    let key = "sk-ant-api03-cordon-canary-5f1d2e3c4b5a69788796a5b4c3d2e1f0";
    let token = "ghp_CordonCanaryToken0123456789abcdefABCD";
    let profile = s.file(
        "profiles/secret.toml",
        "extends = \"default\"\n[environment]\npass = [\"PATH\", \"ANTHROPIC_API_KEY\"]\n",
    );
    let trace = s.path().join("run.trace");
    let ev = s.path().join("events.jsonl");
    let mut c = run_cmd(
        profile.to_str().unwrap(),
        s.path(),
        &["--trace", trace.to_str().unwrap(), "--events", ev.to_str().unwrap()],
        &[
            "/bin/sh",
            "-c",
            "/bin/echo \"x-api-key: $ANTHROPIC_API_KEY\" > /dev/null; touch \"./$ANTHROPIC_API_KEY.txt\"; /bin/true \"$1\"",
            "sh",
            token,
        ],
    );
    c.env("ANTHROPIC_API_KEY", key);
    let out = output(c);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The agent did get the key (the file it named after it exists).
    assert!(s.path().join(format!("{key}.txt")).exists());
    let mut show = cordon_command();
    show.args(["trace", "show", trace.to_str().unwrap()]);
    let shown = output(show);
    let mut policy = cordon_command();
    policy
        .args(["profile", "show", profile.to_str().unwrap()])
        .env("ANTHROPIC_API_KEY", key);
    let policy = output(policy);
    let outputs: Vec<(&str, Vec<u8>)> = vec![
        ("trace file", std::fs::read(&trace).unwrap()),
        ("events", std::fs::read(&ev).unwrap()),
        ("stderr", out.stderr.clone()),
        ("stdout", out.stdout.clone()),
        ("trace show", shown.stdout.clone()),
        ("profile show", policy.stdout.clone()),
    ];
    let has = |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    for (what, bytes) in &outputs {
        assert!(!has(bytes, key), "the key reached the {what}");
        assert!(!has(bytes, token), "the token reached the {what}");
        // Not even the distinctive middle of either.
        assert!(
            !has(bytes, "cordon-canary-5f1d2e3c"),
            "part of the key reached the {what}"
        );
    }
    // What is recorded instead: a marker with a hash, where the secret was.
    let events = std::fs::read_to_string(&ev).unwrap();
    assert!(events.contains("[secret sha256:"), "{events}");
    assert!(
        stdout(&policy).contains("ANTHROPIC_API_KEY=[secret sha256:"),
        "{}",
        stdout(&policy)
    );
}
