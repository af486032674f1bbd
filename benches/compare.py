"""Times cordon, bwrap and firejail wrapping the same commands; prints medians and ratios.
Called by benches/compare.sh (which builds cordon first)."""
import os, statistics, subprocess, sys, tempfile, time

CORDON = sys.argv[1]
RUNS = int(os.environ.get("RUNS", "40"))
WORK_RUNS = int(os.environ.get("WORK_RUNS", "11"))
HOME = os.path.expanduser("~")
WS = tempfile.mkdtemp(prefix="cordon-bench.")
os.chmod(WS, 0o755)
PY = "/usr/bin/python3"

def cordon(cmd):
    return [CORDON, "run", "-q", "--profile", "default", "--workspace", WS, "--"] + cmd

def cordon_proxy(cmd):
    return [CORDON, "run", "-q", "--profile", "networked", "--workspace", WS, "--"] + cmd

def cordon_unmonitored(cmd):
    return [CORDON, "run", "-q", "--no-probes", "--profile", "default", "--workspace", WS, "--"] + cmd

# bwrap cannot hide a directory that does not exist (it would have to create it on the
# read-only root).
HIDE_SSH = ["--tmpfs", f"{HOME}/.ssh"] if os.path.isdir(f"{HOME}/.ssh") else []

def bwrap(cmd):
    return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", WS, WS,
            *HIDE_SSH, "--unshare-all", "--unshare-user", "--disable-userns",
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

# "cordon" has the eBPF probes attached (the default); "cordon-np" is --no-probes;
# "cordon-proxy" is `networked`: network.mode = "proxy" (the egress proxy's sockets and thread).
WRAPPERS = [("bare", bare), ("cordon", cordon), ("cordon-np", cordon_unmonitored), ("cordon-proxy", cordon_proxy),
            ("bwrap", bwrap), ("firejail", firejail)]

WORKLOADS = [
    ("wrap /bin/true", ["/bin/true"], RUNS),
    ("1M os.stat loop", [PY, "-c", "import os\nfor _ in range(1000000): os.stat('.')"], WORK_RUNS),
    ("find /usr -type f | wc -l", ["/bin/sh", "-c", "find /usr -type f | wc -l"], WORK_RUNS),
]

# The probes are loaded once per host; load them before timing (their load time is printed).
print(subprocess.run([CORDON, "probes", "load"], capture_output=True, text=True).stdout.strip())
print(f"{subprocess.run([CORDON, '--version'], capture_output=True, text=True).stdout.strip()}, "
      f"{RUNS} launches / {WORK_RUNS} workload runs each, medians")
def once(argv):
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=WS, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return time.perf_counter() - t

results = {}
for name, cmd, runs in WORKLOADS:
    samples = {w: [] for w, _ in WRAPPERS}
    for wname, wrap in WRAPPERS:
        once(wrap(cmd))  # warm-up: page cache, dentries
    # Interleave the wrappers run by run so drift on a shared VM hits all of them alike.
    for _ in range(runs):
        for wname, wrap in WRAPPERS:
            samples[wname].append(once(wrap(cmd)))
    row = {w: statistics.median(v) for w, v in samples.items()}
    results[name] = row
    cells = "  ".join(f"{w:>9} {row[w]*1000:8.2f} ms" for w, _ in WRAPPERS)
    print(f"{name:<28} {cells}", flush=True)

print()
t = results["wrap /bin/true"]
print(f"probes' share of a launch (attach + register + stream): {1000*(t['cordon']-t['cordon-np']):.2f} ms")
print(f"launch overhead (minus bare): cordon {1000*(t['cordon']-t['bare']):.2f} ms, "
      f"bwrap {1000*(t['bwrap']-t['bare']):.2f} ms, firejail {1000*(t['firejail']-t['bare']):.2f} ms")
print(f"wrap /bin/true: cordon/bwrap = {t['cordon']/t['bwrap']:.2f}x   cordon/firejail = {t['cordon']/t['firejail']:.2f}x")
print(f"a proxy sandbox (networked) vs none (default): {1000*(t['cordon-proxy']-t['cordon']):+.2f} ms per launch")
for name in ["1M os.stat loop", "find /usr -type f | wc -l"]:
    r = results[name]
    print(f"{name}: vs bare  cordon {r['cordon']/r['bare']:.3f}x  cordon --no-probes {r['cordon-np']/r['bare']:.3f}x  bwrap {r['bwrap']/r['bare']:.3f}x  "
          f"firejail {r['firejail']/r['bare']:.3f}x")
subprocess.run(["rm", "-rf", WS])
