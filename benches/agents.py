"""Real agents bare and under their presets: the scripted task of tests/agents.rs (the model's
tool call edits a file, runs `git status` and a test; then a final answer), against the same
stand-ins of the model APIs on loopback, interleaved, medians and ratios per agent.

Bare is the agent as a person runs it, with only the API's names pointed at the stand-in (an
/etc/hosts bound over the host's in a private mount namespace: `unshare -m`, about a
millisecond) and the test CA trusted; under cordon the same names go through the proxy's
`resolve`. Each side keeps its own home, warmed by one discarded run.

Usage: agents.py CORDON   (as root; N=7 runs each by default; AGENTS=codex,gemini,python)"""
import os, shutil, statistics, subprocess, sys, tempfile, time

CORDON = sys.argv[1]
N = int(os.environ.get("N", "7"))
WANT = os.environ.get("AGENTS", "codex,gemini,python").split(",")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = "/opt/cordon-test-agents/node_modules/.bin"
TASK = r"""printf 'fixed\n' > hello.txt && git status --short && python3 -c "print('test', 'passed' if open('hello.txt').read() == 'fixed\n' else 'FAILED')" """.strip()
PY_AGENT = os.path.join(ROOT, "tests", "agents", "py_agent.py")

AGENTS = {
    "codex": {
        "standin": "responses_standin.py", "addr": "127.0.0.3", "names": ["api.openai.com", "chatgpt.com"],
        "argv": [f"{BIN}/codex", "exec", "--skip-git-repo-check", "--sandbox", "danger-full-access", "fix hello.txt"],
        "key": ("CODEX_API_KEY", "sk-bench-codex"), "ca": "CODEX_CA_CERTIFICATE", "preset": "codex",
        "bare_env": lambda home: {"CODEX_HOME": f"{home}/.codex"},
        "preset_env": {},
    },
    "gemini": {
        "standin": "gemini_standin.py", "addr": "127.0.0.4", "names": ["generativelanguage.googleapis.com"],
        "argv": [f"{BIN}/gemini", "-p", "fix hello.txt", "--yolo", "--skip-trust"],
        "key": ("GEMINI_API_KEY", "bench-gemini-key"), "ca": "NODE_EXTRA_CA_CERTS", "preset": "gemini",
        "bare_env": lambda home: {},
        "preset_env": {"GEMINI_SANDBOX": "false", "GEMINI_TELEMETRY_ENABLED": "false", "GEMINI_CLI_NO_RELAUNCH": "true"},
    },
    "python": {
        "standin": "responses_standin.py", "addr": "127.0.0.5", "names": ["api.openai.com"],
        "argv": ["/usr/bin/python3", "agent.py"],
        "key": ("OPENAI_API_KEY", "sk-bench-python"), "ca": "SSL_CERT_FILE", "preset": "python-agent",
        "bare_env": lambda home: {},
        "preset_env": {},
    },
}


def sh(*argv, **kw):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def run(argv, cwd, env):
    """One run, bounded: a sandbox a false alarm froze would wait for its frozen_limit; cordon
    is told twice to stop (it kills the sandbox) and the bench ends saying so."""
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        for _ in range(2):
            p.terminate()
            time.sleep(0.5)
        out, err = p.communicate()
        raise SystemExit(f"{argv[0]} did not finish in 120 s (frozen?)\n{err.decode()[-2000:]}")
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


def certs(d, names):
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
       "-days", "2", "-subj", "/CN=cordon bench CA", cwd=d)
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "api.key", "-out", "api.csr",
       "-subj", f"/CN={names[0]}", cwd=d)
    with open(f"{d}/ext.cnf", "w") as f:
        f.write("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    sh("openssl", "x509", "-req", "-in", "api.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
       "-out", "api.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)


def bench(name, a, scratch):
    d = os.path.join(scratch, name)
    ws, bare_home, cordon_home = (os.path.join(d, x) for x in ("ws", "bare-home", "cordon-home"))
    for p in (ws, bare_home, cordon_home, f"{bare_home}/.codex"):
        os.makedirs(p)
    certs(d, a["names"])
    for home in (bare_home, cordon_home):
        shutil.copy(f"{d}/ca.pem", f"{home}/ca.pem")
    with open(f"{ws}/hello.txt", "w") as f:
        f.write("broken\n")
    shutil.copy(PY_AGENT, f"{ws}/agent.py")
    sh("git", "init", "-q", cwd=ws)
    sh("git", "add", "hello.txt", "agent.py", cwd=ws)
    sh("git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "init", cwd=ws)
    with open("/etc/hosts") as f:
        hosts = f.read() + f"\n{a['addr']} {' '.join(a['names'])}\n"
    with open(f"{d}/hosts", "w") as f:
        f.write(hosts)
    resolve = ", ".join(f'"{n}" = "{a["addr"]}"' for n in a["names"])
    with open(f"{d}/profile.toml", "w") as f:
        # The presets intercept their API's TLS (the key is a credential): cordon verifies the
        # stand-in with the test CA.
        f.write(f'extends = "{a["preset"]}"\n[network]\nresolve = {{ {resolve} }}\n'
                f'upstream_ca = "{{home}}/ca.pem"\n'
                f'[environment]\nset = {{ {a["ca"]} = "{{home}}/ca.pem" }}\n')
    standin = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "tests", "agents", a["standin"]),
                                "api.pem", "api.key", a["addr"], TASK], cwd=d,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert standin.stdout.readline().strip() == b"listening", f"{a['standin']} did not start"
    key_var, key = a["key"]
    bare_env = {"PATH": os.environ["PATH"], "HOME": bare_home, "LANG": "C.UTF-8", key_var: key,
                a["ca"]: f"{bare_home}/ca.pem", **a["bare_env"](bare_home)}
    bare = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', f"{d}/hosts", *a["argv"]]
    confined = [CORDON, "run", "-q", "--profile", f"{d}/profile.toml", "--workspace", ws, "--home", cordon_home,
                "--", *a["argv"]]
    cordon_env = dict(os.environ, **{key_var: key})
    sides = [("bare", bare, bare_env), ("cordon", confined, cordon_env)]
    if a["preset_env"]:
        # The preset also changes the agent's own settings: bare with them too, to tell the
        # agent's gain from cordon's cost.
        sides.insert(1, ("bare+env", bare, dict(bare_env, **a["preset_env"])))
    times = {side: [] for side, _, _ in sides}
    try:
        for i in range(N + 1):
            for side, argv, env in (sides if i % 2 == 0 else sides[::-1]):
                sh("git", "checkout", "-q", "hello.txt", cwd=ws)
                t = time.perf_counter()
                r = run(argv, ws, env)
                dt = time.perf_counter() - t
                with open(f"{ws}/hello.txt") as f:
                    done = f.read() == "fixed\n"
                if r.returncode != 0 or not done or b"test passed" not in r.stdout:
                    raise SystemExit(f"{name} {side}: exit {r.returncode}, edited {done}\n"
                                     f"{r.stdout.decode()[-2000:]}\n{r.stderr.decode()[-2000:]}")
                if i > 0:
                    times[side].append(dt)
    finally:
        standin.kill()
        standin.wait()
    med = {side: statistics.median(t) for side, t in times.items()}
    line = f"{name:<7} bare {med['bare']:5.2f} s"
    if "bare+env" in med:
        line += f"   bare with the preset's variables {med['bare+env']:5.2f} s"
    line += f"   --profile {a['preset']} {med['cordon']:5.2f} s   ratio {med['cordon'] / med['bare']:4.2f}x"
    if "bare+env" in med:
        line += f" ({med['cordon'] / med['bare+env']:4.2f}x against bare with its variables)"
    spread = ", ".join(f"{side} {min(t):.2f}-{max(t):.2f}" for side, t in times.items())
    print(f"{line}   [median of {N}; {spread}]", flush=True)


scratch = tempfile.mkdtemp(prefix="cordon-bench-agents.")
os.chmod(scratch, 0o755)
try:
    for name in WANT:
        bench(name, AGENTS[name], scratch)
finally:
    shutil.rmtree(scratch, ignore_errors=True)
