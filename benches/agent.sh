#!/usr/bin/env bash
# What an agent's tool calls pay: a C build (make -j2), a git clone + log -p + status of a repo
# with history, python start-up with imports, a pytest run, an offline pip install of a local
# wheel, an npm install from a local tarball, a shell pipeline loop — each run as its own
# sandbox, bare vs cordon (probes, monitor, trace on) vs bubblewrap vs firejail, interleaved;
# medians, per-workload ratios and the geometric mean.
#
#   sudo benches/agent.sh               # WORK_RUNS=5 of each
#   WORK_RUNS=9 sudo benches/agent.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/agent.py "$PWD/target/release/cordon"
