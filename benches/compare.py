"""Times cordon, bwrap and firejail wrapping the same commands; prints medians and ratios.
Called by benches/compare.sh (which builds cordon first)."""
import os, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wrappers  # noqa: E402

CORDON = sys.argv[1]
RUNS = int(os.environ.get("RUNS", "40"))
WORK_RUNS = int(os.environ.get("WORK_RUNS", "11"))
WS = tempfile.mkdtemp(prefix="cordon-bench.")
os.chmod(WS, 0o755)
PY = "/usr/bin/python3"

WRAPS = wrappers.wrappers(CORDON, WS)
NAMES = ["bare", "cordon", "cordon-process", "cordon-np", "cordon-proxy", "bwrap", "firejail"]

WORKLOADS = [
    ("wrap /bin/true", ["/bin/true"], RUNS),
    ("1M os.stat loop", [PY, "-c", "import os\nfor _ in range(1000000): os.stat('.')"], WORK_RUNS),
    ("find /usr -type f | wc -l", ["/bin/sh", "-c", "find /usr -type f | wc -l"], WORK_RUNS),
]

# The probes are loaded once per host; load them before timing (their load time is printed).
print(subprocess.run([CORDON, "probes", "load"], capture_output=True, text=True).stdout.strip())
print(f"{subprocess.run([CORDON, '--version'], capture_output=True, text=True).stdout.strip()}, "
      f"{RUNS} launches / {WORK_RUNS} workload runs each, medians")
results = {}
tails = {}
for name, cmd, runs in WORKLOADS:
    # The syscall-bound loops settle after each `full` run (see wrappers.FULL).
    got = wrappers.samples(cmd, NAMES, WRAPS, runs, WS, settle=name != "wrap /bin/true")
    row = {w: statistics.median(v) for w, v in got.items()}
    tails[name] = {w: wrappers.p99(v) for w, v in got.items()}
    results[name] = row
    cells = "  ".join(f"{w:>9} {row[w]*1000:8.2f} ms" for w in NAMES)
    print(f"{name:<28} {cells}", flush=True)

print()
t = results["wrap /bin/true"]
print(f"probes' share of a launch (attach + register + stream): {1000*(t['cordon']-t['cordon-np']):.2f} ms")
print(f"launch overhead (minus bare): cordon {1000*(t['cordon']-t['bare']):.2f} ms, "
      f"bwrap {1000*(t['bwrap']-t['bare']):.2f} ms, firejail {1000*(t['firejail']-t['bare']):.2f} ms")
print(f"wrap /bin/true: cordon/bwrap = {t['cordon']/t['bwrap']:.2f}x   cordon/firejail = {t['cordon']/t['firejail']:.2f}x   "
      f"cordon (visibility process)/bwrap = {t['cordon-process']/t['bwrap']:.2f}x")
p = tails["wrap /bin/true"]
print(f"wrap /bin/true p99: cordon {p['cordon']*1000:.2f} ms ({p['cordon']/t['bwrap']:.2f}x bwrap's median), "
      f"cordon (process) {p['cordon-process']*1000:.2f} ms, bwrap {p['bwrap']*1000:.2f} ms")
print(f"a proxy sandbox (networked) vs none (default): {1000*(t['cordon-proxy']-t['cordon']):+.2f} ms per launch")
for name in ["1M os.stat loop", "find /usr -type f | wc -l"]:
    r = results[name]
    print(f"{name}: vs bare  cordon {r['cordon']/r['bare']:.3f}x  cordon (visibility process) {r['cordon-process']/r['bare']:.3f}x  cordon --no-probes {r['cordon-np']/r['bare']:.3f}x  bwrap {r['bwrap']/r['bare']:.3f}x  "
          f"firejail {r['firejail']/r['bare']:.3f}x")
subprocess.run(["rm", "-rf", WS])
