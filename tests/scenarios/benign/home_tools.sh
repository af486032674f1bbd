#!/bin/sh
# Ordinary reads of home configuration, as an agent's tools do: git identity, a look at the home
# directory and ~/.config, an interpreter starting up.
set -e
cat ~/.gitconfig > /dev/null 2>&1 || true
ls ~ > /dev/null 2>&1 || true
ls -a ~/.config > /dev/null 2>&1 || true
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import json, os; print(json.dumps({"home": os.path.expanduser("~")}))' > /dev/null || true
fi
if command -v git >/dev/null 2>&1; then
  git config --global -l > /dev/null 2>&1 || true
fi
echo ok
