"""Driver of benches/workspace.sh: medians and ratios, interleaved runs."""
import os, shutil, statistics, subprocess, sys, tempfile, time

cordon = sys.argv[1]
RUNS = int(os.environ.get("RUNS", "30"))
WORK_RUNS = int(os.environ.get("WORK_RUNS", "5"))
scratch = tempfile.mkdtemp(prefix="cordon-ws-bench.")


def timed(argv, cwd):
    t = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000


def run(mode, ws, cmd):
    base = [cordon, "run", "-q", "--profile", "default", "--workspace", ws]
    if mode == "bare":
        return cmd
    extra = ["--direct"] if mode == "direct" else ["--transactional", "--commit", "never"]
    return base + extra + ["--"] + cmd


def med(xs):
    return statistics.median(xs)


ws = os.path.join(scratch, "launch")
os.makedirs(ws)
times = {"direct": [], "transactional": []}
for _ in range(RUNS):
    for mode in times:
        times[mode].append(timed(run(mode, ws, ["/bin/true"]), ws))
d, t = med(times["direct"]), med(times["transactional"])
print(f"launch /bin/true: direct {d:.1f} ms, transactional {t:.1f} ms (+{t - d:.2f} ms, p99 {sorted(times['transactional'])[-1]:.1f} ms)")

# Workloads: each run starts from a fresh copy of the project; the run is timed with its
# changes kept in the layer (`--commit never`), then `cordon commit` is timed on its own.
proj = os.path.join(scratch, "proj")
os.makedirs(os.path.join(proj, "src"))
for i in range(40):
    with open(os.path.join(proj, "src", f"f{i}.c"), "w") as f:
        f.write(f"int f{i}(int x) {{ int s = 0; for (int j = 0; j < x; j++) s += j * {i}; return s; }}\n")
with open(os.path.join(proj, "Makefile"), "w") as f:
    f.write("OBJS=$(patsubst %.c,%.o,$(wildcard src/*.c))\nall: lib.a\nlib.a: $(OBJS)\n\tar rcs $@ $^\n%.o: %.c\n\tcc -O2 -c $< -o $@\n")
with open(os.path.join(proj, "test_x.py"), "w") as f:
    f.write("".join(f"def test_{i}():\n    assert sum(range({i})) == {i * (i - 1) // 2}\n" for i in range(200)))
subprocess.run(["git", "init", "-q", "."], cwd=proj, check=True)
subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
for n in range(30):
    with open(os.path.join(proj, "src", "f0.c"), "a") as f:
        f.write(f"/* change {n} */\n")
    subprocess.run(["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qam", f"c{n}"], cwd=proj, check=True)
workloads = {
    "make -j2 (40 files)": ["sh", "-c", "make -s -j2 && make -s clean >/dev/null; rm -f src/*.o lib.a"],
    "git clone + log -p + status": ["sh", "-c", "rm -rf clone && git clone -q . clone && git -C clone log -p >/dev/null && git -C clone status >/dev/null"],
    # The same without hard links: in a layer each hard link of a workspace file copies it up
    # whole (overlayfs), which this isolates.
    "git clone --no-hardlinks + log -p + status": ["sh", "-c", "rm -rf clone && git clone -q --no-hardlinks . clone && git -C clone log -p >/dev/null && git -C clone status >/dev/null"],
    "python test run": ["python3", "-c", "import test_x as t\nfor n in dir(t):\n  n.startswith('test_') and getattr(t, n)()"],
}
geo = {"direct": [], "transactional": []}
commits = []


def commit_all(w):
    """Commit the run's changes (timed), so the next run starts from a clean state."""
    out = subprocess.run([cordon, "changes"], check=True, capture_output=True, text=True).stdout
    ids = [l.split()[0] for l in out.splitlines()[1:] if f" {w} " in l]
    took = sum(timed([cordon, "commit", i], w) for i in ids)
    # The commit removes a big layer in the background: let it finish, and the disk settle,
    # before the next timed run (they are not the next workload's cost).
    for i in ids:
        layer = os.path.join("/var/lib/cordon/changes", i)
        for _ in range(300):
            if not os.path.exists(layer):
                break
            time.sleep(0.1)
    os.sync()
    return took


for name, cmd in workloads.items():
    res = {"bare": [], "direct": [], "transactional": []}
    for _ in range(WORK_RUNS):
        for mode in res:
            w = os.path.join(scratch, f"w-{mode}")
            shutil.rmtree(w, ignore_errors=True)
            shutil.copytree(proj, w, symlinks=True)
            # The copy's dirty pages written back now, not during the timed run.
            os.sync()
            res[mode].append(timed(run(mode, w, cmd), w))
            if mode == "transactional":
                commits.append(commit_all(w))
    b, d, t = med(res["bare"]), med(res["direct"]), med(res["transactional"])
    print(f"{name}: bare {b:.0f} ms, direct {d:.0f} ms, transactional {t:.0f} ms — transactional/direct {t / d:.3f}; "
          f"then `cordon commit` {med(commits):.0f} ms")
    commits.clear()
    geo["direct"].append(d)
    geo["transactional"].append(t)
ratio = statistics.geometric_mean([t / d for t, d in zip(geo["transactional"], geo["direct"])])
print(f"geometric mean transactional/direct: {ratio:.3f}")

# diff and commit of 10,000 changed files.
big = os.path.join(scratch, "big")
os.makedirs(big)
for i in range(100):
    os.makedirs(os.path.join(big, f"d{i}"))
    for j in range(100):
        with open(os.path.join(big, f"d{i}", f"f{j}"), "w") as f:
            f.write("old\n")
script = "for d in d*; do for f in $d/*; do echo new > $f; done; done"
p = subprocess.run([cordon, "run", "-q", "--profile", "default", "--workspace", big, "--transactional",
                    "--commit", "never", "--", "sh", "-c", script], check=True, capture_output=True, text=True,
                   stdin=subprocess.DEVNULL)
out = subprocess.run([cordon, "changes"], check=True, capture_output=True, text=True).stdout
sid = next(l.split()[0] for l in out.splitlines() if big in l)
t_diff = timed([cordon, "diff", sid, "--stat"], big)
t_commit = timed([cordon, "commit", sid], big)
with open(os.path.join(big, "d99", "f99")) as f:
    assert f.read() == "new\n"
print(f"10,000 changed files: diff --stat {t_diff:.0f} ms, commit {t_commit:.0f} ms")
shutil.rmtree(scratch)
