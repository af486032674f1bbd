"""The monitor's figures, on the real kernel (run by benches/detect.sh):

1. detection rate on the rogue corpus and false alarms per benign run (tests/scenarios), under
   the `default` profile, ROUNDS runs of each, overall and per class of misbehaviour (the loud
   ones, and the quiet ones issue 20 names: supply-chain writes, secret harvesting, other
   tools' credential stores, slow deletion — each with its benign look-alikes);
2. time from the offending syscall to a frozen sandbox: an agent reads a credential path,
   gets frozen, is thawed, and does it again, FREEZES times; the latency of each is the
   `Response` event's time (written once the kernel reports the cgroup frozen) minus the
   offending event's kernel timestamp (`offending_time_unix_ns`);
3. the area under the ROC curve of `cordon score` on traces of benign and rogue runs, against
   a baseline learned from other benign runs, by each method (kNN, the default; locality frames;
   plain STIDE, window 6) on the same data;
4. (ONLY=live) the live baseline (`[monitor.baseline]`, response log): learned from half of
   the benign scenarios, its detections on runs of the other half (false alarms on workloads
   it never saw) and on the rogue corpus.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CORDON = sys.argv[1]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCEN = os.path.join(ROOT, "tests", "scenarios")
ROUNDS = int(os.environ.get("ROUNDS", "2"))
FREEZES = int(os.environ.get("FREEZES", "100"))
RULES = ["sensitive_read", "sensitive_write", "egress", "exec", "syscalls", "connects", "execs",
         "deletions", "deleted", "breadth", "secrets", "supply_chain", "denials", "repeated_denials",
         "processes", "written"]

# The class of each scenario (issue 20's quiet classes; the rest are loud). Benign look-alikes
# carry the class they could be mistaken for.
CLASSES = {
    "supply-chain": ["supply_ci_curl", "supply_npm_hook", "supply_dockerfile", "ci_edit",
                     "persist_git_hook", "persist_rc"],
    "harvesting": ["harvest_home_search", "harvest_env_files", "dotenv_app", "home_tools"],
    "credential stores": ["cred_stores_wide", "cred_hunt_home", "cred_hunt_etc"],
    "slow deletion": ["slow_delete", "refactor_delete", "mass_delete"],
}


def class_of(name):
    return next((c for c, ns in CLASSES.items() if name in ns), "loud / other")


def names(kind):
    return sorted(f[:-3] for f in os.listdir(os.path.join(SCEN, kind)) if f.endswith(".sh"))


def events_of(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def kinds(evs, k):
    return [e[k] for e in evs if k in e]


def populate(ws, script):
    """`# workspace: N files`: the project the person had before the agent came (as
    tests/detect.rs makes it)."""
    with open(script) as f:
        n = next((int(l.split()[2]) for l in f if l.startswith("# workspace: ")), 0)
    for i in range(n):
        d = os.path.join(ws, "project", "src", f"pkg{i // 40}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"m{i:03}.py"), "w") as f:
            f.write(f"def f{i}():\n    return {i}\n")


def run_scenario(kind, name, profile="default", trace=None, limit=90):
    """Run one scenario; a sandbox a rule froze is killed as a person would. Returns
    (exit status, events, finished)."""
    ws = tempfile.mkdtemp(prefix="cordon-bench.")
    os.chmod(ws, 0o755)
    shutil.copy(os.path.join(SCEN, kind, name + ".sh"), os.path.join(ws, "scenario.sh"))
    populate(ws, os.path.join(SCEN, kind, name + ".sh"))
    evfile = os.path.join(tempfile.mkdtemp(prefix="cordon-bench-ev."), "ev.jsonl")
    cmd = [CORDON, "run", "-q", "--profile", profile, "--workspace", ws, "--events", evfile]
    if trace:
        cmd += ["--trace", trace]
    p = subprocess.Popen(cmd + ["--", "sh", "scenario.sh"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    start, killed = time.time(), False
    while p.poll() is None and time.time() - start < limit:
        if not killed:
            for r in kinds(events_of(evfile), "response"):
                if r.get("action") == "freeze" and r.get("done"):
                    sb = events_of(evfile)[0]["sandbox"]
                    subprocess.run([CORDON, "kill", sb], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    killed = True
                    break
        time.sleep(0.02)
    if p.poll() is None:
        p.kill()
    code = p.wait()
    evs = events_of(evfile)
    finished = os.path.exists(os.path.join(ws, "finished"))
    subprocess.run(["chattr", "-R", "-a", ws], stderr=subprocess.DEVNULL)
    shutil.rmtree(ws, ignore_errors=True)
    shutil.rmtree(os.path.dirname(evfile), ignore_errors=True)
    return code, evs, finished


def detection_figures():
    print(f"== detection, default profile, {ROUNDS} runs of each scenario")
    caught = total = 0
    missed = []
    per = {}  # class -> [caught, rogue runs, false alarms, benign runs]
    for name in names("rogue"):
        for _ in range(ROUNDS):
            code, evs, finished = run_scenario("rogue", name)
            stopped = any(r.get("action") in ("freeze", "kill") and r.get("done")
                          and r.get("reason", "").startswith("rule ")
                          for r in kinds(evs, "response"))
            ok = bool(kinds(evs, "detection")) and stopped and not finished
            total += 1
            caught += ok
            c = per.setdefault(class_of(name), [0, 0, 0, 0])
            c[0] += ok
            c[1] += 1
            if not ok:
                missed.append(name)
    alarms = runs = 0
    noisy = []
    for name in names("benign"):
        for _ in range(ROUNDS):
            code, evs, _ = run_scenario("benign", name)
            d = kinds(evs, "detection")
            runs += 1
            alarms += len(d)
            c = per.setdefault(class_of(name), [0, 0, 0, 0])
            c[2] += len(d)
            c[3] += 1
            if d:
                noisy.append((name, [x["rule"] for x in d]))
    print(f"rogue detected and stopped: {caught}/{total} ({100.0 * caught / total:.1f}%)"
          + (f"; missed: {missed}" if missed else ""))
    print(f"false alarms: {alarms} in {runs} benign runs ({alarms / runs:.3f} per run)"
          + (f"; {noisy}" if noisy else ""))
    print(f"{'class':<20} {'rogue stopped':>14} {'false alarms':>20}")
    for c, (k, n, a, b) in sorted(per.items()):
        print(f"{c:<20} {f'{k}/{n}':>14} {f'{a} in {b} benign runs':>20}")


def latency_figures():
    print(f"== offending syscall -> frozen sandbox, {FREEZES} freezes")
    ws = tempfile.mkdtemp(prefix="cordon-bench.")
    os.chmod(ws, 0o755)
    # Between offences the agent burns CPU (a freeze has to stop a running task), then opens a
    # credential path (hidden: ENOENT).
    script = ("import os, time\n"
              f"for i in range({FREEZES} * 3):\n"
              "    end = time.time() + 0.02\n"
              "    while time.time() < end: pass\n"
              "    try: open(os.path.expanduser('~/.ssh/id_rsa')).close()\n"
              "    except OSError: pass\n")
    with open(os.path.join(ws, "agent.py"), "w") as f:
        f.write(script)
    evfile = ws + ".ev.jsonl"
    p = subprocess.Popen([CORDON, "run", "-q", "--profile", "default", "--workspace", ws,
                          "--events", evfile, "--", "/usr/bin/python3", "agent.py"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    thawed = 0
    start = time.time()
    while p.poll() is None and thawed < FREEZES and time.time() - start < 300:
        evs = events_of(evfile)
        froze = [r for r in kinds(evs, "response") if r.get("action") == "freeze" and r.get("done")]
        if len(froze) > thawed:
            subprocess.run([CORDON, "thaw", evs[0]["sandbox"]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            thawed += 1
        time.sleep(0.005)
    if p.poll() is None:
        subprocess.run([CORDON, "kill", events_of(evfile)[0]["sandbox"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p.wait()
    evs = events_of(evfile)
    lat = []
    pending = None
    for e in evs:
        # proto3 JSON: the kind is a key of the event, 64-bit integers are strings.
        if "detection" in e and e["detection"]["rule"] == "sensitive_read":
            pending = int(e["detection"]["offendingTimeUnixNs"])
        elif "response" in e and e["response"]["action"] == "freeze" and pending:
            if e["response"]["done"]:
                lat.append((int(e["timeUnixNs"]) - pending) / 1e6)
            pending = None
    shutil.rmtree(ws, ignore_errors=True)
    os.unlink(evfile)
    lat.sort()
    if not lat:
        print("no freezes measured")
        return
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"{len(lat)} freezes: p50 {pct(0.5):.2f} ms, p90 {pct(0.9):.2f} ms, "
          f"p99 {pct(0.99):.2f} ms, max {lat[-1]:.2f} ms")


def auc(pos, neg):
    """P(score of a rogue run > score of a benign run), ties counting half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def score(baseline, traces, method):
    out = subprocess.run([CORDON, "score", "--baseline", baseline, "--method", method] + traces,
                         capture_output=True, text=True, check=True).stdout
    return [float(l.split()[0]) for l in out.splitlines()]


def auc_figures():
    print("== ROC AUC of the learned baseline (events alphabet, traces of the corpus)")
    tmp = tempfile.mkdtemp(prefix="cordon-bench-auc.")
    prof = os.path.join(tmp, "log-only.toml")
    with open(prof, "w") as f:
        f.write('extends = "default"\n')
        for r in RULES:
            f.write(f'[monitor.{r}]\nresponse = "log"\n')
    train, benign, rogue = [], [], []
    for name in names("benign"):
        for i in range(4):
            t = os.path.join(tmp, f"b-{name}-{i}.trace")
            run_scenario("benign", name, profile=prof, trace=t)
            (train if i < 2 else benign).append(t)
    for name in names("rogue"):
        t = os.path.join(tmp, f"r-{name}.trace")
        run_scenario("rogue", name, profile=prof, trace=t, limit=30)
        rogue.append(t)
    base = os.path.join(tmp, "benign.baseline")
    subprocess.run([CORDON, "learn", "--from"] + train + ["--out", base], check=True,
                   stdout=subprocess.DEVNULL)
    for method in ("knn", "frames", "stide"):
        b = score(base, benign, method)
        r = score(base, rogue, method)
        print(f"{method:>6}: AUC {auc(r, b):.3f}  (benign scores median {sorted(b)[len(b) // 2]:.3f}"
              f", max {max(b):.3f}; rogue median {sorted(r)[len(r) // 2]:.3f}; "
              f"{len(b)} benign test runs, {len(r)} rogue runs, baseline from {len(train)} runs)")
    subprocess.run(["chattr", "-R", "-a", tmp], stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)


def live_figures():
    print("== the live baseline ([monitor.baseline], response log): learned from half of the "
          "benign scenarios, run on the other half and on the rogue corpus")
    tmp = tempfile.mkdtemp(prefix="cordon-bench-live.")
    log_only = os.path.join(tmp, "log-only.toml")
    with open(log_only, "w") as f:
        f.write('extends = "default"\n')
        for r in RULES:
            f.write(f'[monitor.{r}]\nresponse = "log"\n')
    benign = names("benign")
    learn_from, held_out = benign[0::2], benign[1::2]
    traces = []
    for name in learn_from:
        for i in range(ROUNDS):
            t = os.path.join(tmp, f"b-{name}-{i}.trace")
            run_scenario("benign", name, profile=log_only, trace=t)
            traces.append(t)
    base = os.path.join(tmp, "live.baseline")
    subprocess.run([CORDON, "learn", "--from"] + traces + ["--out", base], check=True,
                   stdout=subprocess.DEVNULL)
    live = os.path.join(tmp, "live.toml")
    with open(live, "w") as f:
        f.write(f'extends = "{log_only}"\n[monitor.baseline]\nresponse = "log"\nfile = "{base}"\n')
    def baseline_hits(kind, name):
        _, evs, _ = run_scenario(kind, name, profile=live, limit=30)
        return [d for d in kinds(evs, "detection") if d["rule"] == "baseline"]
    fa_runs = fa = runs = 0
    noisy = []
    for name in held_out:
        for _ in range(ROUNDS):
            hits = baseline_hits("benign", name)
            runs += 1
            fa += len(hits)
            fa_runs += bool(hits)
            if hits:
                noisy.append((name, hits[0]["summary"][:100]))
    print(f"learned from {len(traces)} runs of {learn_from}")
    print(f"held-out benign runs with a baseline detection: {fa_runs}/{runs} ({fa} detections)")
    for n, s in noisy:
        print(f"   {n}: {s}")
    hit = 0
    rogue = names("rogue")
    for name in rogue:
        hit += bool(baseline_hits("rogue", name))
    print(f"rogue runs with a baseline detection: {hit}/{len(rogue)}")
    subprocess.run(["chattr", "-R", "-a", tmp], stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    which = os.environ.get("ONLY", "detection,latency,auc").split(",")
    if "detection" in which:
        detection_figures()
    if "latency" in which:
        latency_figures()
    if "auc" in which:
        auc_figures()
    if "live" in which:
        live_figures()
