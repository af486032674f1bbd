"""Called by benches/cold.sh: each wrapper's launch of /bin/true after IDLE seconds without any
launch (the lingerer's 2 s, the VM's idle states and page reclaim pass) against three
back-to-back launches right after it; medians over ROUNDS."""
import os, statistics, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wrappers  # noqa: E402

CORDON = sys.argv[1]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
IDLE = float(os.environ.get("IDLE", "10"))
NAMES = ["cordon", "cordon-process", "bwrap"]
WS = tempfile.mkdtemp(prefix="cordon-cold-bench.")
os.chmod(WS, 0o755)
wraps = wrappers.wrappers(CORDON, WS)
cmd = ["/bin/true"]
cold = {w: [] for w in NAMES}
warm = {w: [] for w in NAMES}
print(f"{ROUNDS} rounds, {IDLE:g} s idle before each wrapper's first launch; medians", flush=True)
for _ in range(ROUNDS):
    for w in NAMES:
        time.sleep(IDLE)
        cold[w].append(wrappers.once(wraps[w](cmd), WS))
        warm[w] += [wrappers.once(wraps[w](cmd), WS) for _ in range(3)]
for w in NAMES:
    c, h = statistics.median(cold[w]) * 1000, statistics.median(warm[w]) * 1000
    print(f"{w:<16} first after idle {c:7.2f} ms   back-to-back {h:7.2f} ms   ratio {c / h:.2f}x")
os.system(f"rm -rf {WS}")
