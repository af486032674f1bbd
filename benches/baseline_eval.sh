#!/usr/bin/env bash
# The learned baseline's figures, cross-validated on corpora it was not tuned on: three
# corpora of full syscall sequences (plain x86_64 numbers, one trace per file), each recorded
# with `strace -f` from different programs (benches/corpora/dev.py: cc, make, git, binutils,
# attacks in bash; interp.py: python, perl, awk, attacks in Python; tools.py: coreutils,
# archives, ed/vi, sqlite3, pip offline, attacks in Perl). Attacks: credential hunting,
# reverse shell, privilege-escalation attempts, persistence, miner, exfiltration, bounded fork
# storm, web shell. A fourth corpus is the hard case on purpose (trojan.py: the interp and
# tools programs, and as attacks the same programs with one bad step slipped in: a credential
# read, an rc-file append, a copy sent out, a shell command, a setuid attempt). Everything runs
# as `nobody` in scratch directories under /tmp, network only to listeners on 127.0.0.1 (see
# benches/corpora/common.py).
#
# Prints, per corpus and per method, ROC AUC and detection at 1% / 5% false alarms by K-fold
# cross-validation, using exactly the documented CLI (`cordon learn --from-syscalls`,
# `cordon score --baseline B --method M`) of the release binary.
#
#   sudo benches/baseline_eval.sh                 # ~4 min to record, ~30 s to evaluate (2 cores)
#   BENIGN=300 K=10 sudo benches/baseline_eval.sh
#   CORPORA=/tmp/my-corpora benches/baseline_eval.sh   # reuse recorded corpora (no root needed)
#
# Root is needed to record (strace -u nobody). The corpora are kept in $CORPORA (default
# /tmp/cordon-corpora) and recorded again only if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
K=${K:-5}
BENIGN=${BENIGN:-200}
CORPORA=${CORPORA:-/tmp/cordon-corpora}
PY=/usr/bin/python3

cargo build --release -q
if ! command -v strace >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=600 install -y strace >/dev/null
fi
for c in dev interp tools trojan; do
    if [ ! -d "$CORPORA/$c/attack" ]; then
        echo "recording corpus $c ($BENIGN benign runs and the attacks) into $CORPORA/$c"
        $PY benches/corpora/$c.py "$CORPORA/$c" "$BENIGN"
    fi
done
exe="${CARGO_TARGET_DIR:-target}/release/cordon"
time $PY benches/baseline_eval.py "$exe" "$K" "$CORPORA/dev" "$CORPORA/interp" "$CORPORA/tools" "$CORPORA/trojan"
