#!/usr/bin/env bash
# The egress proxy's added latency (reused and new connections, p50/p99) and its bulk
# throughput against the same client run bare, on loopback.
#
#   benches/proxy.sh                     # as root
#   N_REUSED=5000 BULK_MB=1024 benches/proxy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/proxy.py "$PWD/target/release/cordon"
