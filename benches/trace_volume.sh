#!/usr/bin/env bash
# Trace size of two real workloads under the default profile: a file-heavy burst and an
# agent-like loop. Prints events (whole and summarised), bytes, bytes per event, MB per hour.
#
#   sudo benches/trace_volume.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -q
cordon=$PWD/target/release/cordon
ws=$(mktemp -d /tmp/cordon-volume.XXXXXX)
trap 'chattr -R -a "$ws" 2>/dev/null || true; rm -rf "$ws"' EXIT
chmod 755 "$ws"
py=$(ls -d /usr/lib/python3.[0-9]* | head -1)
cat > "$ws/burst.sh" <<SH
cp -r $py ./pylib
python3 -m compileall -q -f -j 1 ./pylib >/dev/null 2>&1 || true
find /usr -name '*.h' 2>/dev/null | head -3000 | xargs grep -l include >/dev/null 2>&1 || true
rm -rf pylib
SH
cat > "$ws/agent.sh" <<'SH'
for i in $(seq 1 10); do
  ls -la /usr/bin >/dev/null; cat /etc/os-release >/dev/null
  python3 -c "import json, os; json.dumps(dict(os.environ))"
  echo "step $i" >> notes.txt; grep -c step notes.txt >/dev/null
  sleep 1
done
SH
for w in burst agent; do
  t="$ws/$w.trace"
  start=$(date +%s.%N)
  (cd "$ws" && "$cordon" run -q --workspace "$ws" --trace "$t" -- sh "$w.sh" >/dev/null 2>&1) || true
  end=$(date +%s.%N)
  sealed=$("$cordon" trace verify "$t" | grep '^sealed' || true)
  python3 - "$w" "$start" "$end" "$(stat -c %s "$t")" "$sealed" <<'PY'
import re, sys
w, start, end, size, sealed = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
m = re.search(r"(\d+) events recorded whole, (\d+) summarised", sealed)
whole, summ = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
d = end - start
n = max(whole + summ, 1)
print(f"{w:<6} {d:5.1f} s  {whole} whole + {summ} summarised events  {size/1e6:.2f} MB  "
      f"{size/n:.0f} B/event  {size/d*3600/1e6:.0f} MB/hour")
PY
done
