#!/usr/bin/env bash
# Approvals and grants: how long `cordon grant` / `cordon revoke` take to take effect in a
# running sandbox, the round trip of an agent's request answered with `cordon approve`, and
# what a sandbox that takes requests costs at launch (medians, p90).
#
#   benches/approvals.sh                    # as root
#   N=40 benches/approvals.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/approvals.py "$PWD/target/release/cordon"
