#!/usr/bin/env bash
# The monitor's figures on the real kernel: detection rate and false alarms on the scenario
# corpus, offending syscall -> frozen sandbox latency (p50/p99), ROC AUC of the learned
# baseline vs plain STIDE-6. Offline scoring throughput: `cargo bench --bench detect`.
#
#   sudo benches/detect.sh                    # ROUNDS=2 runs of each scenario, 100 freezes
#   ROUNDS=3 FREEZES=300 ONLY=latency sudo benches/detect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
/usr/bin/python3 benches/detect.py "$PWD/target/release/cordon"
