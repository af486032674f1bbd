"""Times cordon, bwrap and firejail wrapping the same commands; prints medians and ratios.
Called by benches/compare.sh (which builds cordon first)."""
import os, statistics, subprocess, sys, tempfile, time

CORDON = sys.argv[1]
RUNS = int(os.environ.get("RUNS", "40"))
WORK_RUNS = int(os.environ.get("WORK_RUNS", "5"))
HOME = os.path.expanduser("~")
WS = tempfile.mkdtemp(prefix="cordon-bench.")
os.chmod(WS, 0o755)
PY = "/usr/bin/python3"

def cordon(cmd):
    return [CORDON, "run", "-q", "--profile", "default", "--workspace", WS, "--"] + cmd

def bwrap(cmd):
    return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", WS, WS,
            "--tmpfs", f"{HOME}/.ssh", "--unshare-all", "--unshare-user", "--disable-userns",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", HOME,
            "--chdir", WS, "--"] + cmd

def firejail(cmd):
    return ["firejail", "--quiet", "--noprofile", "--net=none", "--read-only=/", f"--read-write={WS}",
            f"--blacklist={HOME}/.ssh", "--caps.drop=all", "--seccomp", "--nonewprivs", "--private-dev",
            "--nogroups", "--disable-mnt", "--restrict-namespaces", "--protocol=unix,inet,inet6",
            "--ipc-namespace", "--"] + cmd

def bare(cmd):
    return cmd

WRAPPERS = [("bare", bare), ("cordon", cordon), ("bwrap", bwrap), ("firejail", firejail)]

def median_time(argv, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, cwd=WS, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return statistics.median(times)

WORKLOADS = [
    ("wrap /bin/true", ["/bin/true"], RUNS),
    ("1M os.stat loop", [PY, "-c", "import os\nfor _ in range(1000000): os.stat('.')"], WORK_RUNS),
    ("find /usr -type f | wc -l", ["/bin/sh", "-c", "find /usr -type f | wc -l"], WORK_RUNS),
]

print(f"cordon {subprocess.run([CORDON, '--version'], capture_output=True, text=True).stdout.strip()}, "
      f"{RUNS} launches / {WORK_RUNS} workload runs each, medians")
results = {}
for name, cmd, runs in WORKLOADS:
    row = {}
    for wname, wrap in WRAPPERS:
        # Warm up once (page cache, dentries), then measure; interleave is not needed at
        # these run counts on an otherwise idle machine.
        median_time(wrap(cmd), 1)
        row[wname] = median_time(wrap(cmd), runs)
    results[name] = row
    cells = "  ".join(f"{w:>8} {row[w]*1000:9.2f} ms" for w, _ in WRAPPERS)
    print(f"{name:<28} {cells}")

print()
t = results["wrap /bin/true"]
print(f"launch overhead (minus bare): cordon {1000*(t['cordon']-t['bare']):.2f} ms, "
      f"bwrap {1000*(t['bwrap']-t['bare']):.2f} ms, firejail {1000*(t['firejail']-t['bare']):.2f} ms")
print(f"wrap /bin/true: cordon/bwrap = {t['cordon']/t['bwrap']:.2f}x   cordon/firejail = {t['cordon']/t['firejail']:.2f}x")
for name in ["1M os.stat loop", "find /usr -type f | wc -l"]:
    r = results[name]
    print(f"{name}: vs bare  cordon {r['cordon']/r['bare']:.3f}x  bwrap {r['bwrap']/r['bare']:.3f}x  "
          f"firejail {r['firejail']/r['bare']:.3f}x")
subprocess.run(["rm", "-rf", WS])
