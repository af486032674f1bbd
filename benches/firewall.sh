#!/usr/bin/env bash
# The AI firewall's added latency: HTTPS requests (reused and new connections, p50/p99) and a
# streamed response's first event, bare vs relayed vs intercepted, on loopback.
#
#   benches/firewall.sh                     # as root
#   N_REUSED=5000 benches/firewall.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/firewall.py "$PWD/target/release/cordon"
