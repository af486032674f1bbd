#!/usr/bin/env bash
# Real agents (Codex CLI, Gemini CLI, a Python agent) doing the same short scripted task bare
# and under their presets, interleaved, medians and ratios (benches/agents.py says how).
#
#   benches/agents.sh                    # as root; 7 runs of each side per agent
#   N=11 AGENTS=codex benches/agents.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/prepare.sh
python3 benches/agents.py "${CARGO_TARGET_DIR:-$PWD/target}/release/cordon"
