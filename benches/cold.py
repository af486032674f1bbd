"""Called by benches/cold.sh: each wrapper's launch of /bin/true after IDLE seconds without any
launch (the VM's idle states and page reclaim pass) against three back-to-back launches right
after it; medians over ROUNDS. Then cordon with and without keep-warm, paired round by round:
its lingerer holding (CORDON_KEEP_WARM after the last sandbox) or cooled (no lingerer at the
first launch, as with CORDON_KEEP_WARM=0 after a pause longer than 2 s)."""
import os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wrappers  # noqa: E402

CORDON = sys.argv[1]
ROUNDS = int(os.environ.get("ROUNDS", "5"))
IDLE = float(os.environ.get("IDLE", "10"))
NAMES = ["cordon", "cordon-process", "bwrap"]
COOLED = ["cordon (keep-warm)", "cordon (cooled)"]
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
# Keep-warm against none, paired round by round (the VM's drift between phases is larger
# than the effect): "keep-warm" had a sandbox end before the pause, its lingerer holding;
# "cooled" had `cordon probes cool` before the pause and CORDON_KEEP_WARM=0 (the lingerer
# leaves 2 s after the last sandbox, as before the keep-warm hold existed).
for _ in range(ROUNDS):
    for w in COOLED:
        subprocess.run([CORDON, "probes", "cool"], stdout=subprocess.DEVNULL, check=True)
        if w == "cordon (keep-warm)":
            os.environ.pop("CORDON_KEEP_WARM", None)
            wrappers.once(wraps["cordon"](cmd), WS)
        else:
            os.environ["CORDON_KEEP_WARM"] = "0"
        time.sleep(IDLE)
        cold[w].append(wrappers.once(wraps["cordon"](cmd), WS))
        warm[w] += [wrappers.once(wraps["cordon"](cmd), WS) for _ in range(3)]
os.environ.pop("CORDON_KEEP_WARM", None)
pairs = list(zip(cold["cordon (keep-warm)"], cold["cordon (cooled)"]))
print(f"keep-warm faster than cooled in {sum(k < c for k, c in pairs)} of {len(pairs)} paired rounds")
for w in NAMES + COOLED:
    c, h = statistics.median(cold[w]) * 1000, statistics.median(warm[w]) * 1000
    print(f"{w:<24} first after idle {c:7.2f} ms   back-to-back {h:7.2f} ms   ratio {c / h:.2f}x")
os.system(f"rm -rf {WS}")
