#!/bin/sh
# workspace: 240 files
# A large refactor: about forty modules move into a new package, thirty obsolete ones are
# deleted, a dozen are edited in place. Most of the project stays.
set -e
list=/tmp/refactor_list.$$
find project -type f | sort > "$list"
before=$(wc -l < "$list")
mkdir -p project/pkg/core
printf '"""Core package."""\n' > project/pkg/__init__.py
printf '"""Core modules, moved out of src."""\n' > project/pkg/core/__init__.py
sed -n '1,40p' "$list" | while IFS= read -r f; do
  rel=${f#project/}
  rel=${rel#src/}
  mkdir -p "project/pkg/core/$(dirname "$rel")"
  mv "$f" "project/pkg/core/$rel"
done
sed -n '41,70p' "$list" | while IFS= read -r f; do
  rm "$f"
done
sed -n '71,82p' "$list" | while IFS= read -r f; do
  sed -i -e 's/from src\./from pkg.core./g' -e '1i\
# imports updated for pkg.core' "$f"
done
rm -f "$list"
test "$(find project/pkg/core -type f | wc -l)" -ge 41
test "$(find project -type f | wc -l)" -eq $((before - 30 + 2))
echo ok
