"""Called by benches/scale.sh: N concurrent sandboxes (idle and busy), measured from /proc."""
import os, re, statistics, subprocess, sys, tempfile, time

CORDON = sys.argv[1]
N = int(os.environ.get("N", "100"))
BUSY = int(os.environ.get("BUSY", "10"))
RATE = int(os.environ.get("RATE", "20000"))
SECONDS = float(os.environ.get("SECONDS_BUSY", "10"))
LAUNCHES = int(os.environ.get("LAUNCHES", "40"))
VISIBILITY = os.environ.get("VISIBILITY", "full")
WS = tempfile.mkdtemp(prefix="cordon-scale.")
os.chmod(WS, 0o755)
HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

with open(f"{WS}/busy.c", "w") as f:
    f.write(r"""
#include <fcntl.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
#include <stdio.h>
/* busy RATE SECONDS OUT: open and close /dev/null RATE times a second, paced per millisecond;
   writes "opens seconds" (what it did, over how long) to OUT. */
int main(int argc, char **argv) {
    long rate = atol(argv[1]); double secs = atof(argv[2]);
    double start = now(); long done = 0;
    while (now() - start < secs) {
        long due = (long)((now() - start) * rate);
        for (; done < due; done++) { int fd = open("/dev/null", O_RDONLY); close(fd); }
        struct timespec ms = {0, 1000000}; nanosleep(&ms, 0);
    }
    FILE *out = fopen(argv[3], "w");
    if (!out) return 1;
    fprintf(out, "%ld %.6f\n", done, now() - start);
    return fclose(out) != 0;
}
""")
subprocess.run(["gcc", "-O2", "-o", f"{WS}/busy", f"{WS}/busy.c"], check=True)
profile = f"{WS}/scale.toml"
with open(profile, "w") as f:
    # The busy sandboxes open /dev/null tens of thousands of times a second: no rule of
    # `default` is about that, but its `written`/rate rules stay on as they would for an agent.
    f.write(f'extends = "default"\n[monitor]\nvisibility = "{VISIBILITY}"\n')

def run(cmd, **kw):
    return subprocess.Popen([CORDON, "run", "--profile", profile, "--workspace", WS, "--"] + cmd,
                            cwd=WS, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)

def children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out

def mem(pid):
    """(rss, pss) bytes of one process."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss

def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0

def launch_times(n):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        r = subprocess.run([CORDON, "run", "-q", "--profile", profile, "--workspace", WS, "--", "/bin/true"],
                           cwd=WS, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            raise SystemExit(f"launch failed: {r.stderr.decode()[-400:]}")
        ts.append(time.perf_counter() - t)
    ts.sort()
    return statistics.median(ts), ts[min(len(ts) - 1, int(len(ts) * 0.99))]

subprocess.run([CORDON, "probes", "load"], capture_output=True)
print(f"{N} sandboxes ({BUSY} busy at {RATE} opens/s each for {SECONDS:.0f} s), visibility {VISIBILITY}")
p50_0, p99_0 = launch_times(LAUNCHES)
print(f"launch /bin/true, nothing else running: p50 {p50_0*1000:.1f} ms  p99 {p99_0*1000:.1f} ms")

# An idle agent waits (for its model's answer): one process blocked, no syscalls. Ended by
# SIGTERM to its supervisor (cordon ends the sandbox and seals the trace).
idle_script = "exec /bin/sleep 3600"
sups = []
t0 = time.perf_counter()
for i in range(N):
    sups.append(run(["/bin/sh", "-c", idle_script]))
# Wait until every sandbox's agent runs (its supervisor has a child).
deadline = time.time() + 120
while time.time() < deadline and not all(children(p.pid) for p in sups):
    time.sleep(0.2)
started = sum(1 for p in sups if children(p.pid))
print(f"{started}/{N} idle sandboxes up in {time.perf_counter()-t0:.1f} s")
# Past each run's start-up (its first counts, checkpoint and sync).
time.sleep(8)
rss = [mem(p.pid) for p in sups]
inner = [mem(c) for p in sups for c in children(p.pid)]
print(f"supervisor memory per sandbox: RSS median {statistics.median(r for r, _ in rss)/2**20:.1f} MiB, "
      f"PSS median {statistics.median(s for _, s in rss)/2**20:.1f} MiB, PSS total {sum(s for _, s in rss)/2**20:.0f} MiB "
      f"(+ the sandbox's init: PSS {statistics.median(s for _, s in inner)/2**20:.2f} MiB each)")
with open("/proc/meminfo") as f:
    info = dict(re.findall(r"(\w+):\s+(\d+)", f.read()))
a = [cpu_ticks(p.pid) for p in sups]
time.sleep(10)
b = [cpu_ticks(p.pid) for p in sups]
idle_cpu = (sum(b) - sum(a)) / HZ / 10 / N * 100
print(f"idle supervisors: {idle_cpu:.3f}% of a core each ({(sum(b)-sum(a))/HZ:.2f} CPU-s in 10 s for all {N})")
p50, p99 = launch_times(LAUNCHES)
print(f"launch /bin/true with {N} idle sandboxes running: p50 {p50*1000:.1f} ms  p99 {p99*1000:.1f} ms")

busy = [run([f"{WS}/busy", str(RATE), str(SECONDS), f"{WS}/busy-{i}.out"]) for i in range(BUSY)]
p50b, p99b = launch_times(max(5, LAUNCHES // 4))
events = lost = opens = 0
rate = 0.0
for i, p in enumerate(busy):
    _, err = p.communicate(timeout=SECONDS + 120)
    m = re.search(r"(\d+) events; (\d+) lost", err.decode())
    if p.returncode != 0 or not m:
        print(f"a busy sandbox failed ({p.returncode}): {err.decode()[-300:]}")
        continue
    with open(f"{WS}/busy-{i}.out") as f:
        did, secs = f.read().split()
    # Each sandbox's events (its opens plus its start: exec, maps) over its own load window:
    # the sandboxes start a few ms apart, so their windows overlap by all but that.
    events += int(m.group(1))
    lost += int(m.group(2))
    opens += int(did)
    rate += int(m.group(1)) / float(secs)
print(f"launch /bin/true while {BUSY} sandboxes are busy: p50 {p50b*1000:.1f} ms  p99 {p99b*1000:.1f} ms")
print(f"busy sandboxes: {opens:,} opens done, {events:,} events recorded = {rate:,.0f} events/s sustained across them "
      f"over {SECONDS:.0f} s, {lost} lost in the kernel (asked for {BUSY*RATE:,} opens/s)")

for p in sups:
    p.terminate()
for p in sups:
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
subprocess.run(["rm", "-rf", WS])
