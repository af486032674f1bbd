"""Called by benches/cold.sh: each wrapper's launch of /bin/true after IDLE seconds without any
launch (the VM's idle states and page reclaim pass) against three back-to-back launches right
after it; medians over ROUNDS. cordon twice: as it runs (its lingerer keeps it warm for
CORDON_KEEP_WARM after the last sandbox) and cooled (no lingerer at each first launch, as
with CORDON_KEEP_WARM=0 after a pause longer than 2 s)."""
import os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wrappers  # noqa: E402

CORDON = sys.argv[1]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
IDLE = float(os.environ.get("IDLE", "10"))
NAMES = ["cordon", "cordon-process", "bwrap"]
COOLED = ["cordon (cooled)", "cordon-process (cooled)"]
WS = tempfile.mkdtemp(prefix="cordon-cold-bench.")
os.chmod(WS, 0o755)
wraps = wrappers.wrappers(CORDON, WS)
cmd = ["/bin/true"]
cold = {w: [] for w in NAMES + COOLED}
warm = {w: [] for w in NAMES + COOLED}
print(f"{ROUNDS} rounds, {IDLE:g} s idle before each wrapper's first launch; medians", flush=True)
# As a user's runs find the host: a lingerer keeps cordon warm for CORDON_KEEP_WARM (600 s)
# after the last sandbox.
for _ in range(ROUNDS):
    for w in NAMES:
        time.sleep(IDLE)
        cold[w].append(wrappers.once(wraps[w](cmd), WS))
        warm[w] += [wrappers.once(wraps[w](cmd), WS) for _ in range(3)]
# Without it (`cordon probes cool` before each pause, CORDON_KEEP_WARM=0: the lingerer leaves
# 2 s after the last sandbox, as before the keep-warm hold existed).
os.environ["CORDON_KEEP_WARM"] = "0"
for _ in range(ROUNDS):
    for w in COOLED:
        subprocess.run([CORDON, "probes", "cool"], stdout=subprocess.DEVNULL, check=True)
        time.sleep(IDLE)
        base = w.removesuffix(" (cooled)")
        cold[w].append(wrappers.once(wraps[base](cmd), WS))
        warm[w] += [wrappers.once(wraps[base](cmd), WS) for _ in range(3)]
del os.environ["CORDON_KEEP_WARM"]
for w in NAMES + COOLED:
    c, h = statistics.median(cold[w]) * 1000, statistics.median(warm[w]) * 1000
    print(f"{w:<24} first after idle {c:7.2f} ms   back-to-back {h:7.2f} ms   ratio {c / h:.2f}x")
os.system(f"rm -rf {WS}")
