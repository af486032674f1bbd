//! The whole-run tallies (`deleted`'s share, `breadth`, `secrets`) and the wider credential
//! stores of `default`, on synthetic events.

use super::tests::{config, detector, ev, run, sys};
use super::*;
use crate::kernel::{OPENAT, UNLINKAT};

const AT_FDCWD: u64 = u64::MAX - 99;
#[allow(clippy::cast_sign_loss)]
const DIR: u64 = libc::O_DIRECTORY as u64;

fn list(seq: u64, path: &str) -> pb::Event {
    ev(seq, seq, sys("openat", OPENAT, path, &[AT_FDCWD, 0, DIR], 3, ""))
}

fn read(seq: u64, path: &str, errno: &str) -> pb::Event {
    let ret = if errno.is_empty() { 3 } else { -2 };
    ev(
        seq,
        seq,
        sys("openat", OPENAT, path, &[AT_FDCWD, 0, 0], ret, errno),
    )
}

#[test]
fn a_recursive_listing_of_home_is_caught_and_the_workspace_and_system_are_not() {
    let limit = config("default").rule("breadth").unwrap().limit;
    let mut d = detector("default");
    // The workspace and the system, listed as much as anyone likes: not counted.
    let elsewhere: Vec<_> = (0..limit * 2)
        .flat_map(|i| {
            [
                list(i, &format!("/w/src/d{i}")),
                list(i, &format!("/usr/lib/d{i}")),
            ]
        })
        .collect();
    assert!(run(&mut d, &elsewhere).is_empty());
    // One directory of home listed again and again: one.
    let again: Vec<_> = (0..limit * 2).map(|i| list(i, "/home/u/.config")).collect();
    assert!(run(&mut d, &again).is_empty());
    let home: Vec<_> = (0..=limit).map(|i| list(i, &format!("/home/u/p/d{i}"))).collect();
    let f = run(&mut d, &home);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "breadth");
    assert!(
        f[0].summary
            .starts_with(&format!("{} distinct directories", limit + 1)),
        "{}",
        f[0].summary
    );
    // It fires once.
    assert!(run(&mut d, &[list(1, "/home/u/q")]).is_empty());
}

#[test]
fn secrets_read_from_many_places_are_harvesting_and_one_apps_env_files_are_not() {
    assert_eq!(config("default").rule("secrets").unwrap().limit, 2);
    let mut d = detector("default");
    let app = [
        read(1, "/w/web/.env", ""),
        read(2, "/w/web/.env.local", ""),
        read(3, "/w/web/.env.development", ""),
        // Templates, CA bundles, a missing file, packages' own keys: not secrets read.
        read(4, "/w/api/.env.example", ""),
        read(5, "/etc/ssl/certs/ca.pem", ""),
        read(6, "/w/.venv/lib/python3/site-packages/certifi/cacert.pem", ""),
        read(7, "/w/worker/.env", "ENOENT"),
        read(8, "/w/node_modules/x/test.key", ""),
        read(9, "/proc/self/environ", ""),
    ];
    assert!(run(&mut d, &app).is_empty());
    let f = run(&mut d, &[read(10, "/w/billing/.env.production", "")]);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "secrets");
    assert!(
        f[0].summary.contains("3 distinct directories"),
        "{}",
        f[0].summary
    );
    // Processes' environments are one place (`ps` reads every one), counted beside the rest.
    let mut d = detector("default");
    let environs: Vec<_> = (1..=30)
        .map(|p| read(p, &format!("/proc/{p}/environ"), ""))
        .collect();
    assert!(run(&mut d, &environs).is_empty());
    let more = [read(40, "/w/a/.env", ""), read(41, "/w/b/.env", "")];
    assert_eq!(run(&mut d, &more).len(), 1);
}

#[test]
fn half_of_the_files_the_workspace_held_deleted_is_caught_and_the_runs_own_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("w");
    for i in 0..40 {
        let sub = ws.join(format!("src/p{}", i % 4));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("m{i}.py")), "x").unwrap();
    }
    // A regenerated tree is neither counted nor walked.
    std::fs::create_dir_all(ws.join("node_modules/a")).unwrap();
    std::fs::write(ws.join("node_modules/a/i.js"), "x").unwrap();
    let cfg = config("default");
    let w = ws.to_str().unwrap().to_string();
    let mut cfg2 = cfg.clone();
    for r in &mut cfg2.rules {
        if let Some(ps) = &mut r.patterns {
            for p in ps.iter_mut() {
                *p = p.replace("/w/", &format!("{w}/"));
            }
        }
    }
    let mut d = Detector::new(&cfg2, Box::new(|_, _| None)).with_host_files(|_| true);
    let wanted = d.start_files();
    assert_eq!(
        wanted.len(),
        2,
        "default's deleted and rewritten rules have a share"
    );
    for (cell, set) in wanted {
        let start = tally::StartFiles::read(&ws, &set, std::time::SystemTime::now());
        assert!(!start.partial);
        // Files changed after the run started are the run's own, whenever the walk sees them.
        let none = tally::StartFiles::read(&ws, &set, std::time::UNIX_EPOCH);
        assert!(none.files.is_empty(), "every file here is younger than 1970");
        cell.set(start).ok().unwrap();
    }
    let rm = |seq: u64, path: String| {
        ev(
            seq,
            seq,
            sys("unlinkat", UNLINKAT, &path, &[AT_FDCWD, 0, 0], 0, ""),
        )
    };
    // Files the run made itself and then deleted: not the workspace's.
    let own: Vec<_> = (0..100).map(|i| rm(i, format!("{w}/build/o{i}.o"))).collect();
    assert!(run(&mut d, &own).is_empty());
    let start_files: Vec<_> = (0..40)
        .map(|i| rm(200 + i, format!("{w}/src/p{}/m{i}.py", i % 4)))
        .collect();
    assert!(run(&mut d, &start_files[..19]).is_empty());
    let f = run(&mut d, &start_files[19..20]);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "deleted");
    assert!(f[0].summary.starts_with("20 of the 40 files"), "{}", f[0].summary);
    assert!(run(&mut d, &start_files[20..]).is_empty(), "fires once");
}

#[test]
fn other_tools_credential_stores_are_sensitive_reads() {
    for p in [
        "/home/u/.config/Slack/Cookies",
        "/home/u/.config/discord/Local Storage/leveldb/000003.ldb",
        "/home/u/.thunderbird/abc.default/logins.json",
        "/home/u/.pulumi/credentials.json",
        "/home/u/.config/stripe/config.toml",
        "/home/u/.terraform.d/credentials.tfrc.json",
        "/home/u/.vercel/auth.json",
        "/home/u/.databrickscfg",
        "/home/u/Downloads/bitwarden_export_20240101.json",
        "/home/u/Documents/passwords.csv",
        "/home/u/Desktop/vault.kdb",
        "/home/u/.config/keepassxc/keepassxc.ini",
    ] {
        let mut d = detector("default");
        let f = run(&mut d, &[read(1, p, "ENOENT")]);
        assert!(f.iter().any(|f| f.rule == "sensitive_read"), "{p}: {f:?}");
    }
    // What tools read on every run is not hunting.
    for p in [
        "/home/u/.npmrc",
        "/home/u/.config/configstore/update-notifier-npm.json",
    ] {
        let mut d = detector("default");
        assert!(run(&mut d, &[read(1, p, "ENOENT")]).is_empty(), "{p}");
    }
}

#[test]
fn most_of_the_workspace_rewritten_in_place_is_an_alert() {
    let rule = config("default").rule("rewritten").cloned().unwrap();
    assert_eq!(rule.response, crate::profile::monitor::Response::Alert);
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("w");
    std::fs::create_dir_all(ws.join("src")).unwrap();
    for i in 0..20 {
        std::fs::write(ws.join(format!("src/m{i}.py")), "x").unwrap();
    }
    let w = ws.to_str().unwrap().to_string();
    let mut cfg = config("default");
    for r in &mut cfg.rules {
        for p in r.patterns.iter_mut().flatten() {
            *p = p.replace("/w/", &format!("{w}/"));
        }
    }
    let mut d = Detector::new(&cfg, Box::new(|_, _| None)).with_host_files(|_| true);
    for (cell, set) in d.start_files() {
        cell.set(tally::StartFiles::read(&ws, &set, std::time::SystemTime::now()))
            .ok()
            .unwrap();
    }
    let trunc = |seq: u64, i: u64| {
        #[allow(clippy::cast_sign_loss)]
        let flags = (libc::O_WRONLY | libc::O_TRUNC) as u64;
        let path = format!("{w}/src/m{i}.py");
        ev(
            seq,
            seq,
            sys("openat", OPENAT, &path, &[AT_FDCWD, 0, flags], 3, ""),
        )
    };
    let renamed = |seq: u64, i: u64| {
        let mut k = sys(
            "rename",
            crate::kernel::RENAMES[0],
            &format!("{w}/tmp{i}"),
            &[],
            0,
            "",
        );
        if let Kind::Syscall(s) = &mut k {
            s.path2 = format!("{w}/src/m{i}.py");
        }
        ev(seq, seq, k)
    };
    // 15 of 20: under 80%.
    let mut evs: Vec<_> = (0..8).map(|i| trunc(i, i)).collect();
    evs.extend((8..15).map(|i| renamed(i, i)));
    assert!(run(&mut d, &evs).is_empty());
    let f = run(&mut d, &[trunc(15, 15)]);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].rule, "rewritten");
    assert!(f[0].summary.starts_with("16 of the 20 files"), "{}", f[0].summary);
}
