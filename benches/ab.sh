#!/usr/bin/env bash
# Two cordon binaries side by side on a launch (wrap /bin/true), for a change whose effect is
# smaller than this VM's drift: launches in alternating blocks (two builds from different
# target directories pin different probe objects and evict each other's, so launch by launch
# alternation would reload the probes every time; each block's first launches are dropped),
# with an A/A control (the first binary against itself) printed beside the A/B.
#
#   cp target/release/cordon /tmp/cordon-old; <change, cargo build --release>
#   sudo benches/ab.sh /tmp/cordon-old target/release/cordon            # profile default
#   PROFILE=/path/p.toml BLOCKS=6 sudo benches/ab.sh OLD NEW
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: benches/ab.sh OLD_CORDON NEW_CORDON" >&2; exit 2; }
old=$(realpath "$1"); new=$(realpath "$2")
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/ab.py "$old" "$new"
