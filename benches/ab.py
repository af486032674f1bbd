"""Called by benches/ab.sh: launches of /bin/true by two cordon binaries in alternating blocks,
and the first against itself (A/A): a ratio the A/A control also shows is noise."""
import os, statistics, subprocess, sys, tempfile, time

A, B = sys.argv[1], sys.argv[2]
PROFILE = os.environ.get("PROFILE", "default")
BLOCKS = int(os.environ.get("BLOCKS", "4"))
PER_BLOCK, DROPPED = 15, 4
WS = tempfile.mkdtemp(prefix="cordon-ab-bench.")
os.chmod(WS, 0o755)


def launch(binary):
    t = time.perf_counter()
    r = subprocess.run([binary, "run", "-q", "--profile", PROFILE, "--workspace", WS, "--", "/bin/true"],
                       cwd=WS, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"{binary} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return (time.perf_counter() - t) * 1000


def blocks(first, second):
    """Medians (ms) of `first` and `second`, run in alternating blocks."""
    out = ([], [])
    for i in range(BLOCKS):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for side in order:
            binary = (first, second)[side]
            for _ in range(DROPPED):
                launch(binary)
            out[side].extend(launch(binary) for _ in range(PER_BLOCK))
    return statistics.median(out[0]), statistics.median(out[1])


print(f"profile {PROFILE}: {BLOCKS} blocks of {PER_BLOCK} launches per side ({DROPPED} dropped each)", flush=True)
a, b = blocks(A, B)
a1, a2 = blocks(A, A)
print(f"A/B  {A}: {a:.2f} ms   {B}: {b:.2f} ms   B/A {b / a:.3f}")
print(f"A/A  {A} against itself: {a1:.2f} / {a2:.2f} ms   ratio {a2 / a1:.3f} (the noise)")
noise = abs(a2 / a1 - 1)
verdict = "within the noise" if abs(b / a - 1) <= noise else ("B faster" if b < a else "B slower")
print(f"verdict: {verdict} (|B/A - 1| = {abs(b / a - 1):.3f}, A/A spread {noise:.3f})")
subprocess.run(["rm", "-rf", WS])
