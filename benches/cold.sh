#!/usr/bin/env bash
# The first launch after an idle pause vs back-to-back launches (issue 19: the first launch
# after an idle minute should be no slower than the others), for cordon (full and process
# visibility) and bwrap, same policy (benches/wrappers.py).
#
#   sudo benches/cold.sh                    # ROUNDS=5, IDLE=10 s before each cold launch
#   IDLE=65 ROUNDS=3 sudo benches/cold.sh   # an idle minute (this VM's DAMON pageout: 60 s)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/cold.py "$PWD/target/release/cordon"
