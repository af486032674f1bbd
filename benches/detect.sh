#!/usr/bin/env bash
# The monitor's figures on the real kernel: detection rate and false alarms on the scenario
# corpus, offending syscall -> frozen sandbox latency (p50/p99), ROC AUC of the learned
# baseline vs plain STIDE-6. Offline scoring throughput: `cargo bench --bench detect`.
#
#   sudo benches/detect.sh                    # ROUNDS=2 runs of each scenario, 100 freezes
#   ROUNDS=3 FREEZES=300 ONLY=latency sudo benches/detect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
cargo build --release --locked --bins -q
# The runs' traces (append-only) go to a scratch directory, not the host's state directory.
traces=$(mktemp -d /tmp/cordon-bench-traces.XXXXXX)
trap 'chattr -R -a "$traces" 2>/dev/null || true; rm -rf "$traces"' EXIT
export CORDON_TRACE_DIR=$traces
/usr/bin/python3 benches/detect.py "$PWD/target/release/cordon"
