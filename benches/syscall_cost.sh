#!/usr/bin/env bash
# What the probes add per syscall: an unrecorded one (getppid: counted only) and a recorded
# one (openat of /dev/null: a full record with its path). Timed inside the sandbox with the
# probes and with --no-probes, and on the host (outside any sandbox, where the probes only
# look up the cgroup id) while a sandbox is watched, and with no sandbox running (the syscall
# tracepoints are then detached). The same with `[monitor] visibility = "process"` (no syscall
# tracepoints): inside such a sandbox, and on the host while only such a sandbox runs.
#
#   sudo benches/syscall_cost.sh          # N=2000000 iterations, best of 5
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup >/dev/null
cargo build --release --locked --bins -q
cordon=$PWD/target/release/cordon
N=${N:-2000000}
ws=$(mktemp -d /tmp/cordon-syscost.XXXXXX)
trap 'chattr -R -a "$ws" 2>/dev/null || true; rm -rf "$ws"' EXIT
chmod 755 "$ws"
# The runs' traces (append-only) go to the scratch directory, not the host's state directory.
export CORDON_TRACE_DIR=$ws/traces
cat > "$ws/cost.c" <<'C'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    double best_ppid = 1e18, best_open = 1e18;
    for (int r = 0; r < 5; r++) {
        double t = now();
        for (long i = 0; i < n; i++) syscall(SYS_getppid);
        double d = (now() - t) / n; if (d < best_ppid) best_ppid = d;
        t = now();
        for (long i = 0; i < n / 4; i++) { int fd = openat(AT_FDCWD, "/dev/null", O_RDONLY); close(fd); }
        d = (now() - t) / (n / 4); if (d < best_open) best_open = d;
    }
    printf("%.1f %.1f\n", best_ppid, best_open);
    return 0;
}
C
gcc -O2 -o "$ws/cost" "$ws/cost.c"
printf 'extends = "default"\n[monitor]\nvisibility = "process"\n' > "$ws/process.toml"
run() { (cd "$ws" && "$@" ./cost "$N"); }
"$cordon" probes load >/dev/null
read -r in_p in_o < <(run "$cordon" run -q --workspace "$ws" --)
read -r pv_p pv_o < <(run "$cordon" run -q --profile "$ws/process.toml" --workspace "$ws" -- 2>/dev/null)
read -r np_p np_o < <(run "$cordon" run -q --no-probes --workspace "$ws" --)
# A sandbox that waits keeps the syscall tracepoints attached while the host is timed.
idle() {
    rm -f "$ws/ready" "$ws/stop"
    "$cordon" run -q "$@" --workspace "$ws" -- /bin/sh -c 'touch ready; i=0; while [ ! -e stop ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done' 2>/dev/null &
    bg=$!
    for _ in $(seq 100); do [ -e "$ws/ready" ] && break; sleep 0.1; done
}
idle
read -r host_p host_o < <(run env)
touch "$ws/stop"
wait "$bg"
idle --profile "$ws/process.toml"
read -r hostpv_p hostpv_o < <(run env)
touch "$ws/stop"
wait "$bg"
read -r off_p off_o < <(run env)
printf '%-44s %10s %16s\n' "ns per syscall (best of 5)" "getppid" "openat+close"
printf '%-44s %10s %16s\n' "sandbox, probes attached" "$in_p" "$in_o"
printf '%-44s %10s %16s\n' "sandbox, visibility = process" "$pv_p" "$pv_o"
printf '%-44s %10s %16s\n' "sandbox, --no-probes" "$np_p" "$np_o"
printf '%-44s %10s %16s\n' "host process while a sandbox is watched" "$host_p" "$host_o"
printf '%-44s %10s %16s\n' "host process, only a visibility=process one" "$hostpv_p" "$hostpv_o"
printf '%-44s %10s %16s\n' "host process, no sandbox running" "$off_p" "$off_o"
python3 - "$in_p" "$np_p" "$in_o" "$np_o" "$host_p" "$off_p" "$pv_p" "$pv_o" "$hostpv_p" <<'PY'
import sys
a = [float(x) for x in sys.argv[1:]]
print(f"added by the probes in a sandbox: getppid {a[0]-a[1]:+.1f} ns (counted), openat+close {a[2]-a[3]:+.1f} ns (openat recorded)")
print(f"added by visibility = process in a sandbox: getppid {a[6]-a[1]:+.1f} ns, openat+close {a[7]-a[3]:+.1f} ns")
print(f"added to every other process on the host while a sandbox runs: getppid {a[4]-a[5]:+.1f} ns (full), {a[8]-a[5]:+.1f} ns (only visibility = process)")
PY
