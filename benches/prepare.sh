# Sourced by the benchmark scripts: set up, build the release binary, and send the runs'
# traces (append-only files) to a scratch directory removed on exit, not the host's state
# directory.
scripts/setup >/dev/null
cargo build --release --locked --bins -q
traces=$(mktemp -d /tmp/cordon-bench-traces.XXXXXX)
trap 'chattr -R -a "$traces" 2>/dev/null || true; rm -rf "$traces"' EXIT
export CORDON_TRACE_DIR=$traces
