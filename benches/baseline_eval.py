"""Cross-validated figures of `cordon learn` / `cordon score` (run by benches/baseline_eval.sh).

For each corpus directory (benign/ and attack/, one trace per file, plain syscall numbers):
the benign traces are split into K folds; for each fold a baseline is learned from the other
folds with `cordon learn --from-syscalls DIR --out B`, and the held-out benign traces and all
attack traces are scored with `cordon score --baseline B --method M FILES...`. The held-out
scores of all folds are pooled; the table gives, per corpus and method, the ROC AUC and the
share of attack traces scored above the benign score that 1% (5%) of benign traces exceed
(detection at 1% and 5% false alarms; ties go to the benign side, so a constant score detects
nothing).

    python3 benches/baseline_eval.py CORDON K CORPUS_DIR...
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

CORDON = sys.argv[1]
K = int(sys.argv[2])
CORPORA = sys.argv[3:]
METHODS = os.environ.get("METHODS", "knn,frames,stide").split(",")


def auc(pos, neg):
    """P(attack score > benign score), ties counting half (rank formula)."""
    allv = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    ranks = [0.0] * len(allv)
    i = 0
    while i < len(allv):
        j = i
        while j < len(allv) and allv[j][0] == allv[i][0]:
            j += 1
        for k in range(i, j):
            ranks[k] = (i + j + 1) / 2
        i = j
    rp = sum(r for r, (_, lab) in zip(ranks, allv) if lab)
    return (rp - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def detection(pos, neg, rate):
    """Attacks scored above the threshold that lets through at most `rate` of benign."""
    neg = sorted(neg, reverse=True)
    k = int(rate * len(neg))
    threshold = neg[k] if k < len(neg) else float("-inf")
    return sum(p > threshold for p in pos) / len(pos)


def score(baseline, files, method):
    out = []
    for i in range(0, len(files), 500):
        r = subprocess.run([CORDON, "score", "--baseline", baseline, "--method", method]
                           + files[i:i + 500], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"cordon score failed: {r.stderr.strip()}")
        out += [float(line.split()[0]) for line in r.stdout.splitlines()]
    assert len(out) == len(files)
    return out


def evaluate(corpus, tmp):
    ls = lambda d: sorted(os.path.join(corpus, d, f) for f in os.listdir(os.path.join(corpus, d)))
    benign, attack = ls("benign"), ls("attack")
    order = benign[:]
    random.Random(20).shuffle(order)
    folds = [order[i::K] for i in range(K)]
    pooled = {m: ([], []) for m in METHODS}
    for i, held in enumerate(folds):
        train = os.path.join(tmp, f"train{i}")
        os.makedirs(train)
        for f in benign:
            if f not in held:
                os.symlink(f, os.path.join(train, os.path.basename(f)))
        b = os.path.join(tmp, f"fold{i}.baseline")
        subprocess.run([CORDON, "learn", "--from-syscalls", train, "--out", b], check=True,
                       stdout=subprocess.DEVNULL)
        for m in METHODS:
            pooled[m][1].extend(score(b, held, m))
            pooled[m][0].extend(score(b, attack, m))
    return len(benign), [os.path.basename(a)[5:-4].split("+")[-1] for a in attack], pooled


def main():
    print(f"{K}-fold cross-validation; AUC, detection at 1% and 5% false alarms "
          f"(held-out benign traces pooled over the folds)")
    print(f"{'corpus':<10} {'traces':>14} {'method':<8} {'AUC':>6} {'det@1%':>7} {'det@5%':>7}")
    means = {m: [] for m in METHODS}
    for corpus in CORPORA:
        tmp = tempfile.mkdtemp(prefix="cordon-eval.")
        try:
            start = time.time()
            nb, kinds, pooled = evaluate(corpus, tmp)
            na = len(kinds)
            for m in METHODS:
                pos, neg = pooled[m]
                a = auc(pos, neg)
                means[m].append(a)
                print(f"{os.path.basename(corpus.rstrip('/')):<10} {f'{nb} b / {na} a':>14} {m:<8} "
                      f"{a:6.3f} {detection(pos, neg, 0.01):7.3f} {detection(pos, neg, 0.05):7.3f}",
                      flush=True)
            # Which attack behaviours the first method catches at 5% false alarms (each attack
            # is scored once per fold: the share over the folds).
            pos, neg = pooled[METHODS[0]]
            neg = sorted(neg, reverse=True)
            threshold = neg[int(0.05 * len(neg))]
            caught = {}
            for j, p in enumerate(pos):
                k = kinds[j % na]
                caught.setdefault(k, []).append(p > threshold)
            print(f"{'':<10} {METHODS[0]} at 5% false alarms: " + ", ".join(
                f"{k} {sum(v) / len(v):.0%}" for k, v in sorted(caught.items()))
                + f" ({time.time() - start:.0f} s)", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for m in METHODS:
        print(f"mean AUC {m:<8} {sum(means[m]) / len(means[m]):.3f}")


if __name__ == "__main__":
    main()
