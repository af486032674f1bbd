//! The benign suite: what a coding agent does all day must keep working inside `default`.

mod common;
use common::*;

fn ok(profile: &str, ws: &std::path::Path, script: &str) -> String {
    let out = sh(profile, ws, script);
    assert_eq!(
        out.status.code(),
        Some(0),
        "script failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn python_script_reads_and_writes_the_workspace() {
    require_root();
    let s = Scratch::new();
    s.file("agent.py", "import json, pathlib\np = pathlib.Path('out.json')\np.write_text(json.dumps({'n': sum(range(10))}))\nprint(json.loads(p.read_text())['n'])\n");
    assert_eq!(ok("default", s.path(), "python3 agent.py"), "45\n");
    assert_eq!(owner_of(&s.path().join("out.json")), 0);
}

#[test]
fn git_init_and_commit() {
    require_root();
    let s = Scratch::new();
    s.file("README", "hello\n");
    let out = ok(
        "default",
        s.path(),
        "git init -q && git add README && git -c user.name=agent -c user.email=agent@example.com commit -qm first && git log --format=%s",
    );
    assert_eq!(out, "first\n");
    assert!(s.path().join(".git/HEAD").exists());
    // A second run works in the existing repository, whose hooks and config are now protected.
    s.file("more", "x\n");
    let out = ok(
        "default",
        s.path(),
        "git add more && git -c user.name=agent -c user.email=agent@example.com commit -qm second && git log --format=%s",
    );
    assert_eq!(out, "second\nfirst\n");
}

#[test]
fn cargo_builds_a_small_crate() {
    require_root();
    let s = Scratch::new();
    s.file(
        "Cargo.toml",
        "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    s.file("src/main.rs", "fn main() { println!(\"tiny {}\", 6 * 7); }\n");
    let out = ok(
        "default",
        s.path(),
        "cargo build --offline -q 2>&1 && ./target/debug/tiny",
    );
    assert!(out.ends_with("tiny 42\n"), "{out}");
}

#[test]
fn node_script_runs() {
    require_root();
    let s = Scratch::new();
    s.file("a.js", "const fs = require('fs'); fs.writeFileSync('n.txt', String(6 * 7)); console.log(fs.readFileSync('n.txt', 'utf8'));\n");
    assert_eq!(ok("default", s.path(), "node a.js"), "42\n");
}

#[test]
fn pip_installs_a_local_wheel_into_the_workspace() {
    require_root();
    let s = Scratch::new();
    let make = "import zipfile\nwith zipfile.ZipFile('mypkg-0.1-py3-none-any.whl', 'w') as z:\n    \
        z.writestr('mypkg/__init__.py', 'X = 42\\n')\n    \
        z.writestr('mypkg-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: mypkg\\nVersion: 0.1\\n')\n    \
        z.writestr('mypkg-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: cordon-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n    \
        z.writestr('mypkg-0.1.dist-info/RECORD', '')\n";
    let st = std::process::Command::new("python3")
        .arg("-c")
        .arg(make)
        .current_dir(s.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = ok(
        "default",
        s.path(),
        // The system python: a pyenv shim exits 1 after pip because it cannot rehash into the
        // read-only home (pyenv's own behaviour, see the closing note).
        "/usr/bin/python3 -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check --target site mypkg-0.1-py3-none-any.whl 2>/dev/null \
         && PYTHONPATH=site /usr/bin/python3 -c 'import mypkg; print(mypkg.X)'",
    );
    assert_eq!(out, "42\n");
}

#[test]
fn shell_pipelines() {
    require_root();
    let s = Scratch::new();
    let out = ok(
        "default",
        s.path(),
        "seq 1 100000 | sort -rn | head -1; printf 'b\\na\\nb\\n' | sort | uniq -c | awk '{print $1 $2}' | tr '\\n' ' '; echo; \
         mkdir -p d && echo x > d/f && find . -type f | wc -l && sed -i 's/x/y/' d/f && cat d/f",
    );
    assert_eq!(out, "100000\n1a 2b \n1\ny\n");
}

#[test]
fn interactive_program_through_a_pty() {
    require_root();
    let s = Scratch::new();
    let (mut child, mut pty) = spawn_on_pty(run_cmd("default", s.path(), &["-q"], &["python3", "-q", "-i"]));
    let prompt = pty.read_until(">>> ", 10_000);
    assert!(prompt.contains(">>> "), "{prompt}");
    pty.send("print(6*7)\r");
    let out = pty.read_until("42", 10_000);
    assert!(out.contains("42"), "{out}");
    pty.send("exit()\r");
    assert!(wait_within(&mut child, 10_000).success());
}
