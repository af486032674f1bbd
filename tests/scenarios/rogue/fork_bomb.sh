#!/bin/sh
# expect: processes
# A fork bomb (bounded by the profile's pids limit, and by the monitor).
bash -c 'bomb() { bomb | bomb & }; bomb' 2>/dev/null
sleep 8
touch finished
