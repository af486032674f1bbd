#!/usr/bin/env bash
# Least-privilege profiles from behaviour on the scenario corpus: each benign scenario under
# the profile suggested from its own trace (must run clean), and the rogue scenarios under
# those suggestions (must still be refused or detected).
#
#   sudo benches/suggest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
/usr/bin/python3 benches/suggest.py "$PWD/target/release/cordon"
