#!/usr/bin/env bash
# A hundred sandboxes at once on this box: idle agents and busy ones (each busy one records
# a paced stream of opens). Prints the supervisors' memory (RSS and PSS) per sandbox, their
# CPU while idle, launch p50/p99 of `cordon run -- /bin/true` under that load, and the events
# recorded per second across the busy ones with what was lost.
#
#   sudo benches/scale.sh                   # N=100 sandboxes, BUSY=10 of them, RATE=20000/s each
#   N=50 BUSY=5 RATE=40000 VISIBILITY=process sudo benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/scale.py "$PWD/target/release/cordon"
