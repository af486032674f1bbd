#!/bin/sh
# The git a coding agent does: init, commit, branch, diff, merge, log.
set -e
g() { git -c user.name=agent -c user.email=agent@example.com "$@"; }
g init -q
echo one > a.txt
g add a.txt && g commit -qm one
g checkout -qb feature
echo two >> a.txt
g commit -qam two
g checkout -q -
g merge -q --ff-only feature
g diff HEAD~1 --stat >/dev/null
test "$(g log --format=%s | head -1)" = two
g status --short >/dev/null
echo ok
