#!/bin/bash
# Runs every measurement in sequence; logs to runs/. Before each run waits (bounded, 60 min) for a quiet machine:
# 1-min load < 1.0, no cargo/rustc/cc1/ld process (another session shares this VM), getppid floor < 190 ns.
cd "$(dirname "$0")" || exit 1
mkdir -p runs
quiet() {
  for i in $(seq 1 360); do
    l=$(cut -d' ' -f1 /proc/loadavg)
    busy=$(ps -eo comm | grep -cE '^(cargo|rustc|cc1|ld)$')
    g=$(./getppid_quick 50000 | awk '{print $(NF-1)}')
    if awk "BEGIN{exit !($l < 1.0 && $g < 190)}" && [ "$busy" = 0 ]; then return 0; fi
    sleep 10
  done
  echo "WARNING: machine not quiet (load $l, busy $busy)"
}
run() { # name, command...
  local name=$1; shift
  quiet
  { echo "### $(date -u +%FT%TZ) load=$(cat /proc/loadavg) getppid: $(./getppid_quick 50000)"; echo "### cmd: $*"; "$@"; echo "### rc=$? end load=$(cat /proc/loadavg) getppid: $(./getppid_quick 50000)"; } > runs/$name.txt 2>&1
}
for sec in "$@"; do case "$sec" in
fan)
  run fan-base        ./fan base 200000
  run fan-mount       ./fan mount 200000
  run fan-mount-dist  ./fan mount 200000 distinct
  run fan-mount-dist-unl ./fan mount 200000 distinct unlimited
  run fan-mount-readlink ./fan mount 200000 readlink
  run fan-mountfid    ./fan mountfid 200000
  run fan-fs          ./fan fs 200000
  run fan-noread      ./fan mount 50000 distinct noread
  run fan-noread-unl-big ./fan mount 50000 distinct noread unlimited big
  run fan-userns      ./fan_userns ;;
hostab)
  run fan-hostab      ./fan_hostab 20000 41 ;;
fidpin)
  run fan-noread-unl-fid-16m ./fan mountfid 50000 distinct noread unlimited ;;
noreadunl)
  run fan-noread-unl-big ./fan mount 50000 distinct noread unlimited big ;;
sec)
  run snotif          ./snotif 200000
  run snotif-samecpu  ./snotif 200000 samecpu ;;
ll)
  run ll-probe        ./landlock_audit probe
  run ll-bench        ./landlock_audit bench 200000 ;;
esac; done
echo done
