"""Least-privilege profiles from behaviour, measured on the scenario corpus (benches/suggest.sh).

For each benign scenario: run it under `default` with a trace, `cordon profile suggest` from
that trace, run it again under the suggestion — it must finish with exit 0, no detection and
no refusal the run under `default` did not have. Then every rogue scenario is run under each suggestion whose workload it could hide
in (each under one, round robin): it must still be refused by the sandbox or detected by the
monitor.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detect  # noqa: E402  (the scenario runner: populate, kill after a freeze)

CORDON = sys.argv[1]
detect.CORDON = CORDON


def events(trace):
    out = subprocess.run([CORDON, "trace", "show", "--format", "json", trace],
                         capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def refusals(recs):
    bad = []
    for r in recs:
        e = r.get("event") or {}
        s = e.get("syscall")
        if s and (s.get("denied") or s.get("errno") in ("EACCES", "EROFS", "EPERM")):
            bad.append(f"{s.get('name')} {s.get('path', '')} {s.get('errno', '')}")
    return bad


def main():
    tmp = tempfile.mkdtemp(prefix="cordon-suggest-bench.")
    suggestions = {}
    clean = 0
    names = detect.names("benign")
    for name in names:
        t1 = os.path.join(tmp, f"{name}.1.trace")
        code, evs, _ = detect.run_scenario("benign", name, trace=t1)
        prof = os.path.join(tmp, f"{name}.toml")
        s = subprocess.run([CORDON, "profile", "suggest", "--from", t1, "--out", prof],
                           capture_output=True, text=True)
        if s.returncode != 0:
            print(f"{name}: suggest failed: {s.stderr.strip()[-200:]}")
            continue
        suggestions[name] = prof
        t2 = os.path.join(tmp, f"{name}.2.trace")
        code2, evs2, _ = detect.run_scenario("benign", name, profile=prof, trace=t2)
        det = [d["rule"] for d in detect.kinds(evs2, "detection")]
        # Refusals the run under `default` had too (a tool probing a read-only home) are the
        # base's, not the suggestion's.
        base = set(refusals(events(t1)))
        bad = [r for r in refusals(events(t2)) if r not in base]
        ok = code2 == 0 and not det and not bad
        clean += ok
        if not ok:
            print(f"{name}: under its suggestion exit {code2}, detections {det}, refusals {bad[:5]}")
    print(f"benign scenarios clean under their own suggestion: {clean}/{len(names)}")
    caught = total = 0
    missed = []
    pairs = list(suggestions.items())
    for i, rogue in enumerate(detect.names("rogue")):
        # Each rogue scenario under one of the suggestions, round robin.
        for name, prof in [pairs[i % len(pairs)]] if pairs else []:
            t = os.path.join(tmp, f"r-{rogue}-{name}.trace")
            code, evs, finished = detect.run_scenario("rogue", rogue, profile=prof, trace=t, limit=40)
            stopped = bool(detect.kinds(evs, "detection")) or bool(refusals(events(t)))
            total += 1
            caught += stopped
            if not stopped:
                missed.append((rogue, name))
    print(f"rogue runs refused or detected under the suggestions: {caught}/{total}"
          + (f"; missed: {missed}" if missed else ""))
    subprocess.run(["chattr", "-R", "-a", tmp], stderr=subprocess.DEVNULL)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
