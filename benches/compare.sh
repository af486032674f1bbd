#!/usr/bin/env bash
# Side-by-side: cordon vs bubblewrap vs firejail with the same policy (workspace read-write,
# everything else read-only, ~/.ssh hidden, no network), in one run, printing ratios.
#
#   sudo benches/compare.sh            # default: 40 launches, 5 runs of each workload
#   RUNS=100 WORK_RUNS=9 sudo benches/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/compare.py "$PWD/target/release/cordon"
