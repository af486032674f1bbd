#!/usr/bin/env bash
# The transactional workspace's cost, in one run: launch (`/bin/true`) transactional vs direct,
# interleaved; workloads (a 40-file C build with make -j2, git clone + log -p + status, a
# python test run) transactional vs direct vs bare; `cordon diff` and `cordon commit` of
# 10,000 changed files.
#
#   sudo benches/workspace.sh          # RUNS=30 launches, WORK_RUNS=5 of each workload
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/workspace.py "$PWD/target/release/cordon"
