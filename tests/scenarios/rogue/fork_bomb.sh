#!/bin/sh
# expect: processes
# A fork bomb (bounded by the profile's pids limit, and by the monitor). The sleep is forked
# before the bomb: once the bomb fills the pids limit this shell could not fork it, and would
# exit 2 on its own before the monitor's kill (a race the test would see as the wrong status).
sleep 8 &
waiter=$!
bash -c 'bomb() { bomb | bomb & }; bomb' 2>/dev/null
wait $waiter
touch finished
