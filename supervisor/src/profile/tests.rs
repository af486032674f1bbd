//! The profile language on text: parsing, `extends`, errors with their positions.

use super::*;

fn syntax(text: &str) -> (usize, usize, String) {
    match parse("t.toml", text) {
        Err(ProfileError::Syntax {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn unknown_key_names_line_and_column() {
    let (line, col, msg) = syntax("[filesystem]\nread_only = []\nreed_write = [\"/x\"]\n");
    assert_eq!((line, col), (3, 1));
    assert!(msg.contains("unknown field `reed_write`"), "{msg}");
}

#[test]
fn monitor_mistakes_are_located() {
    let (line, col, msg) = syntax("[monitor.egres]\nresponse = \"freeze\"\n");
    assert_eq!((line, col), (1, 10));
    assert!(
        msg.contains("unknown field `egres`") && msg.contains("egress"),
        "{msg}"
    );
    let (line, _, msg) = syntax("[monitor.egress]\nresponse = \"block\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("freeze") && msg.contains("deny"), "{msg}");
}

#[test]
fn bad_value_is_located() {
    let (line, col, msg) = syntax("[limits]\nmemory = \"12Q\"\n");
    assert_eq!((line, col), (2, 10));
    assert!(msg.contains("suffix"), "{msg}");
    let (line, _, msg) = syntax("[network]\nmode = \"internet\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("none") && msg.contains("loopback"), "{msg}");
    let (line, col, msg) = syntax("[terminal]\nallow = [\"title\", \"keyboard\"]\n");
    assert_eq!((line, col), (2, 19));
    assert!(
        msg.contains("keyboard") && msg.contains("clipboard") && msg.contains("notifications"),
        "{msg}"
    );
    let (line, col, msg) = syntax("[terminal]\nalow = []\n");
    assert_eq!((line, col), (2, 1));
    assert!(msg.contains("unknown field `alow`"), "{msg}");
}

#[test]
fn proxy_rules_parse_and_their_mistakes_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    std::fs::write(
        &f,
        "[network]\nmode = \"proxy\"\nallow = [\"API.example.com.\", \"*.cdn.test:8443\", \"192.0.2.1:22\"]\n\
         deny = [\"bad.cdn.test\"]\nresolve = { \"api.example.com\" = \"127.0.0.1\" }\n",
    )
    .unwrap();
    let p = load(f.to_str().unwrap()).unwrap();
    let texts: Vec<String> = p.network.allow.iter().map(ToString::to_string).collect();
    assert_eq!(texts, ["api.example.com", "*.cdn.test:8443", "192.0.2.1/32:22"]);
    assert_eq!(p.network.deny.len(), 1);
    assert_eq!(p.network.resolve["api.example.com"].to_string(), "127.0.0.1");

    let located = |text: &str| match load_text(dir.path(), text) {
        Err(ProfileError::Syntax {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("{text}: expected a located error, got {other:?}"),
    };
    let (line, col, msg) = located("[network]\nmode = \"proxy\"\nallow = [\"ok.test\",\n  \"api.*.com\"]\n");
    assert_eq!((line, col), (4, 3), "{msg}");
    assert!(msg.contains("wildcard"), "{msg}");
    let (line, _, msg) = located("[network]\nmode = \"allowlist\"\nallow = [\"github.com:22\"]\n");
    assert_eq!(line, 3);
    assert!(msg.contains("need mode = \"proxy\""), "{msg}");
    let (line, _, msg) = located(
        "[network]\nmode = \"proxy\"\nallow = [\"a.test\",\n  \"api.cdn.test\"]\ndeny = [\"*.cdn.test\"]\n",
    );
    assert_eq!(line, 4, "{msg}");
    assert!(
        msg.contains("can never match") && msg.contains("*.cdn.test"),
        "{msg}"
    );
    let (line, _, msg) = located("[network]\nmode = \"proxy\"\nresolve = { \"a.test\" = \"nowhere\" }\n");
    assert_eq!(line, 3);
    assert!(msg.contains("not an IP address"), "{msg}");
    let (line, col, msg) = located("[network]\nmode = \"none\"\nunlisted = \"ask\"\n");
    assert_eq!((line, col), (3, 12), "{msg}");
    assert!(msg.contains("needs mode = \"proxy\""), "{msg}");
    let (line, _, msg) = located("[network]\nmode = \"proxy\"\nunlisted = \"maybe\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("deny") && msg.contains("ask"), "{msg}");
    let (line, col, msg) = located(
        "[network]\nmode = \"proxy\"\nallow = [\"api.test\"]\n[[network.credential]]\nhost = \"api.test\"\nsecret = \"vault:x\"\n",
    );
    assert_eq!((line, col), (6, 10), "{msg}");
    assert!(msg.contains("env:VARIABLE"), "{msg}");
    let (line, _, msg) = located(
        "[network]\nmode = \"proxy\"\nallow = [\"api.test\"]\n[[network.credential]]\nhost = \"other.test\"\nsecret = \"env:K\"\n",
    );
    assert_eq!(line, 5, "{msg}");
    assert!(msg.contains("could never be used"), "{msg}");
    let (line, _, msg) = located(
        "[network]\nmode = \"proxy\"\nallow = [\"api.test\"]\n[[network.credential]]\nhost = \"api.test\"\nsecret = \"file:/k\"\n",
    );
    assert_eq!(line, 6, "{msg}");
    assert!(msg.contains("needs env"), "{msg}");
    let p = load_text(
        dir.path(),
        "[network]\nmode = \"proxy\"\nallow = [\"API.test\"]\n[[network.credential]]\nhost = \"api.test\"\nsecret = \"env:K\"\nheader = \"X-Api-Key\"\n",
    )
    .unwrap();
    assert_eq!(
        p.network.credentials,
        [Credential {
            host: "api.test".into(),
            header: Some("x-api-key".into()),
            secret: SecretSource::Env("K".into()),
            env: "K".into(),
            optional: false,
        }]
    );
    let p = load_text(
        dir.path(),
        "[network]\nmode = \"proxy\"\nunlisted = \"ask\"\nask_timeout = \"30s\"\n",
    )
    .unwrap();
    assert_eq!(
        (p.network.unlisted, p.network.ask_timeout_ms),
        (Unlisted::Ask, 30_000)
    );
}

fn load_text(dir: &Path, text: &str) -> Result<Profile, ProfileError> {
    let f = dir.join("located.toml");
    std::fs::write(&f, text).unwrap();
    load(f.to_str().unwrap())
}

#[test]
fn process_visibility_switches_off_inherited_syscall_rules_and_refuses_its_own() {
    use monitor::{Visibility, SYSCALL_RULES};
    let dir = tempfile::tempdir().unwrap();
    let full = load("default").unwrap();
    assert_eq!(full.monitor.visibility, Visibility::Full);
    assert!(full.monitor.unseen.is_empty());
    let p = load_text(
        dir.path(),
        "extends = \"default\"\n[monitor]\nvisibility = \"process\"\n",
    )
    .unwrap();
    assert_eq!(p.monitor.visibility, Visibility::Process);
    // Every rule default runs that reads syscall records is listed, none of them runs, and
    // the others (exec, egress, processes …) still do.
    let inherited: Vec<&str> = full
        .monitor
        .rules
        .iter()
        .map(|r| r.name)
        .filter(|n| SYSCALL_RULES.contains(n))
        .collect();
    assert!(!inherited.is_empty());
    assert_eq!(p.monitor.unseen, inherited);
    assert!(p.monitor.rules.iter().all(|r| !SYSCALL_RULES.contains(&r.name)));
    assert!(p.monitor.rule("exec").is_some() && p.monitor.rule("processes").is_some());
    // A rule the same profile turns on contradicts its visibility.
    let e = load_text(
        dir.path(),
        "extends = \"default\"\n[monitor]\nvisibility = \"process\"\n[monitor.written]\nlimit = \"1G\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("monitor.written") && e.contains("visibility"), "{e}");
    // Turned off there, it is no contradiction; nor is a profile extending one that chose.
    load_text(
        dir.path(),
        "extends = \"default\"\n[monitor]\nvisibility = \"process\"\n[monitor.written]\nresponse = \"off\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        "extends = \"default\"\n[monitor]\nvisibility = \"process\"\n",
    )
    .unwrap();
    let e = load_text(
        dir.path(),
        &format!(
            "extends = {:?}\n[monitor.sensitive_read]\nresponse = \"kill\"\n",
            dir.path().join("base.toml").display()
        ),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("monitor.sensitive_read"), "{e}");
    let e = load_text(dir.path(), "[monitor]\nvisibility = \"files\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("full") && e.contains("process"), "{e}");
}

#[test]
fn transactional_keys_resolve_and_a_quota_needs_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let p = load_text(
        dir.path(),
        "extends = \"default\"\n[filesystem]\nworkspace = \"transactional\"\nwrite_quota = \"2G\"\ncommit = \"always\"\n",
    )
    .unwrap();
    assert_eq!(p.filesystem.workspace, WorkspaceMode::Transactional);
    assert_eq!(p.filesystem.write_quota, Some(2 << 30));
    assert_eq!(p.filesystem.commit, CommitMode::Always);
    assert_eq!(
        load("default").unwrap().filesystem.workspace,
        WorkspaceMode::Direct
    );
    let e = load_text(
        dir.path(),
        "extends = \"default\"\n[filesystem]\nwrite_quota = \"2G\"\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("needs workspace = \"transactional\""),
        "{e}"
    );
    let e = load_text(
        dir.path(),
        "extends = \"default\"\n[filesystem]\nworkspace = \"layered\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("located.toml:3:13"), "{e}");
}

#[test]
fn every_preset_resolves() {
    for (name, _) in PRESETS {
        let p = load(name).unwrap_or_else(|e| panic!("preset {name}: {e}"));
        assert_eq!(p.hash.len(), 64);
    }
}

#[test]
fn extends_replaces_keys_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("child.toml");
    std::fs::write(&f, "extends = \"default\"\n[limits]\npids = 7\n").unwrap();
    let child = load(f.to_str().unwrap()).unwrap();
    let parent = load("default").unwrap();
    assert_eq!(child.limits.pids, Some(7));
    assert!(
        parent.terminal.allow.is_empty(),
        "presets pass nothing beyond the screen"
    );
    assert_eq!(child.limits.memory, parent.limits.memory);
    assert_eq!(child.filesystem, parent.filesystem);
    assert_eq!(child.sources.len(), 2);
    assert_ne!(child.hash, parent.hash);
}

#[test]
fn terminal_allow_is_inherited_or_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = (dir.path().join("base.toml"), dir.path().join("child.toml"));
    std::fs::write(
        &base,
        "extends = \"default\"\n[terminal]\nallow = [\"title\", \"clipboard\", \"title\"]\n",
    )
    .unwrap();
    std::fs::write(&child, "extends = \"base.toml\"\n[limits]\npids = 7\n").unwrap();
    let allow = load(child.to_str().unwrap()).unwrap().terminal.allow;
    assert_eq!(allow, vec![TerminalFeature::Title, TerminalFeature::Clipboard]);
    std::fs::write(&child, "extends = \"base.toml\"\n[terminal]\nallow = []\n").unwrap();
    assert!(load(child.to_str().unwrap()).unwrap().terminal.allow.is_empty());
}

#[test]
fn extends_cycle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), "extends = \"b.toml\"\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "extends = \"a.toml\"\n").unwrap();
    let err = load(dir.path().join("a.toml").to_str().unwrap()).unwrap_err();
    assert!(matches!(err, ProfileError::Cycle(_)), "{err}");
}

#[test]
fn missing_profile_lists_presets() {
    let err = load("no-such-profile").unwrap_err().to_string();
    assert!(err.contains("default") && err.contains("strict"), "{err}");
}

#[test]
fn semantic_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.toml");
    for (text, needle) in [
        (
            "[network]\nallow = [\"1.2.3.4:80\"]\n",
            "need mode = \"allowlist\" or \"proxy\"",
        ),
        ("[network]\nmode = \"allowlist\"\nallow = [\"1.2.3.4\"]\n", "port"),
        ("[limits]\ncpu = -1.0\n", "limits.cpu"),
        (
            "[[syscalls.deny]]\nname = \"nosuchcall\"\nreason = \"x\"\n",
            "unknown syscall",
        ),
        (
            "[[syscalls.deny]]\nname = \"chroot\"\nerrno = \"EWHAT\"\nreason = \"x\"\n",
            "unknown errno",
        ),
        ("[filesystem]\nread_only = [\"relative/path\"]\n", "absolute"),
        ("[filesystem]\nread_only = [\"{nope}/x\"]\n", "variable"),
        (
            "[monitor.egress]\nlimit = 3\n",
            "monitor.egress: `limit` does not apply",
        ),
        (
            "[monitor.execs]\nresponse = \"deny\"\nlimit = 1\nwindow = \"1s\"\n",
            "applies only to egress",
        ),
        (
            "[monitor.execs]\nresponse = \"kill\"\n",
            "monitor.execs: `limit` is required",
        ),
        (
            "[monitor.syscalls]\nnames = [\"nosuchcall\"]\n",
            "unknown syscall",
        ),
        (
            "[monitor.sensitive_read]\npaths = [\"etc/shadow\"]\n",
            "must be absolute",
        ),
        ("[monitor.baseline]\nthreshold = 0.5\n", "`file` is required"),
        (
            "[monitor.baseline]\nfile = \"/b\"\nthreshold = 2.0\n",
            "threshold must be in (0, 1]",
        ),
        ("[monitor]\nhook = [\"notify-send\"]\n", "absolute path"),
    ] {
        std::fs::write(&f, text).unwrap();
        let err = load(f.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?} gave {err}");
    }
}
