"""Called by benches/agent.sh: agent-like workloads, each command its own sandbox, bare vs
cordon vs bwrap vs firejail (benches/wrappers.py: the same policy for each)."""
import base64, hashlib, math, os, shutil, subprocess, sys, tempfile, zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wrappers  # noqa: E402

CORDON = sys.argv[1]
RUNS = int(os.environ.get("WORK_RUNS", "5"))
WS = tempfile.mkdtemp(prefix="cordon-agent-bench.")
os.chmod(WS, 0o755)
PY = "/usr/bin/python3"
# cordon-np (the sandbox without the probes) separates what the sandbox costs from what watching it
# costs.
NAMES = ["bare", "cordon", "cordon-process", "cordon-np", "bwrap", "firejail"]


def sh(cmd, cwd=WS):
    subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# A C project: 40 translation units and a Makefile.
os.makedirs(f"{WS}/c")
for i in range(40):
    with open(f"{WS}/c/f{i}.c", "w") as f:
        f.write(f"int f{i}(int x) {{ int s = 0; for (int i = 0; i < x; i++) s += i * {i}; return s; }}\n")
with open(f"{WS}/c/main.c", "w") as f:
    f.write("int f1(int);\nint main(void) { return f1(3) == 3 ? 0 : 1; }\n")
with open(f"{WS}/c/Makefile", "w") as f:
    f.write("OBJ := $(patsubst %.c,%.o,$(wildcard f*.c))\nprog: main.c libf.a\n\tgcc -O2 main.c -L. -lf -o prog\n"
            "libf.a: $(OBJ)\n\tar rcs libf.a $(OBJ)\n%.o: %.c\n\tgcc -O2 -c $< -o $@\nclean:\n\trm -f *.o libf.a prog\n")

# A repository with history.
os.makedirs(f"{WS}/repo")
git = "git -c user.email=a@a -c user.name=a"
sh("git init -q", f"{WS}/repo")
for i in range(80):
    with open(f"{WS}/repo/file{i % 12}.txt", "a") as f:
        f.write(f"line {i}\n" * 20)
    sh(f"{git} add -A && {git} commit -qm 'change {i}'", f"{WS}/repo")

# Tests for pytest.
os.makedirs(f"{WS}/tests")
with open(f"{WS}/tests/test_calc.py", "w") as f:
    for i in range(30):
        f.write(f"def test_{i}():\n    assert sum(range({i})) == {i} * ({i} - 1) // 2\n")

# A wheel, made by hand (a zip with its metadata and RECORD).
files = {"demo_pkg/__init__.py": b"VALUE = 42\n",
         "demo_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
         "demo_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: cordon-bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = ""
for name, data in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record += f"{name},sha256={digest},{len(data)}\n"
record += "demo_pkg-1.0.dist-info/RECORD,,\n"
with zipfile.ZipFile(f"{WS}/demo_pkg-1.0-py3-none-any.whl", "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
    z.writestr("demo_pkg-1.0.dist-info/RECORD", record)

# An npm package tarball and a project that installs it offline.
os.makedirs(f"{WS}/npmpkg")
with open(f"{WS}/npmpkg/package.json", "w") as f:
    f.write('{"name": "demo-pkg", "version": "1.0.0", "main": "index.js"}\n')
with open(f"{WS}/npmpkg/index.js", "w") as f:
    f.write("module.exports = 42;\n")
sh("npm pack --silent >/dev/null", f"{WS}/npmpkg")
os.makedirs(f"{WS}/npmproj")
with open(f"{WS}/npmproj/package.json", "w") as f:
    f.write('{"name": "proj", "version": "1.0.0", "private": true}\n')
sh("chmod -R a+rwX .")

npm = (f"cd npmproj && rm -rf node_modules package-lock.json && npm install --offline --no-audit --no-fund "
       f"--no-update-notifier --cache {WS}/.npmcache ../npmpkg/demo-pkg-1.0.0.tgz >/dev/null")
WORKLOADS = [
    ("make -j2 (40 C files)", ["/bin/sh", "-c", "cd c && make -s clean && make -s -j2"]),
    ("git clone + log -p + status", ["/bin/sh", "-c", "rm -rf clone && git clone -q repo clone && git -C clone log -p >/dev/null && git -C clone status --short"]),
    ("python start-up with imports", [PY, "-c", "import json, re, subprocess, asyncio, email.parser, http.client, sqlite3, decimal, argparse"]),
    ("pytest (30 tests)", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]),
    ("pip install a local wheel", ["/bin/sh", "-c", f"rm -rf pipt && {PY} -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check --target pipt demo_pkg-1.0-py3-none-any.whl"]),
    ("npm install a local tarball", ["/bin/sh", "-c", npm]),
    ("shell pipeline loop (200)", ["/bin/sh", "-c", "for i in $(seq 200); do echo $i | sed s/1/x/ | wc -c >/dev/null; done"]),
]

print(subprocess.run([CORDON, "probes", "load"], capture_output=True, text=True).stdout.strip())
print(f"{RUNS} runs of each workload, each run its own sandbox; medians")
wraps = wrappers.wrappers(CORDON, WS)
ratios = {w: [] for w in NAMES[1:]}
for name, cmd in WORKLOADS:
    row = wrappers.interleaved(cmd, NAMES, wraps, RUNS, WS, settle=True)
    cells = "  ".join(f"{w} {row[w]*1000:7.1f} ms" for w in NAMES)
    vs = "  ".join(f"{w} {row[w]/row['bare']:.2f}x" for w in NAMES[1:])
    for w in NAMES[1:]:
        ratios[w].append(row[w] / row["bare"])
    print(f"{name:<30} {cells}   vs bare: {vs}", flush=True)
geo = {w: math.exp(sum(map(math.log, r)) / len(r)) for w, r in ratios.items()}
print("geometric mean vs bare: " + "  ".join(f"{w} {g:.3f}x" for w, g in geo.items()))
print(f"cordon vs bwrap (geomean): {geo['cordon']/geo['bwrap']:.3f}x   cordon vs firejail: {geo['cordon']/geo['firejail']:.3f}x")
shutil.rmtree(WS, ignore_errors=True)
