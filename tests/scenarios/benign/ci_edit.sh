#!/bin/sh
# Asked to improve CI: the agent edits the GitHub workflow (a test step and a matrix), adds a
# dev dependency and a lint script to package.json, and changes a Makefile target.
set -e
mkdir -p .github/workflows src
printf 'module.exports = (a, b) => a + b;\n' > src/index.js
cat > .github/workflows/ci.yml <<'YML'
name: ci
on: [push, pull_request]
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: cargo build --locked
YML
cat > package.json <<'JSON'
{
  "name": "tiny-web",
  "version": "1.0.0",
  "main": "src/index.js",
  "scripts": {
    "test": "node --test"
  },
  "dependencies": {
    "express": "^4.19.2"
  }
}
JSON
printf 'all: build\nbuild:\n\tcargo build\ntest:\n\tcargo test\n' > Makefile
# The workflow, saved the way an editor does (temporary file, then rename).
tmp=".github/workflows/.ci.yml.tmp$$"
cat > "$tmp" <<'YML'
name: ci
on: [push, pull_request]
jobs:
  build:
    strategy:
      matrix:
        os: [ubuntu-latest, macos-latest]
        node: [18, 20]
    runs-on: ${{ matrix.os }}
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-node@v4
        with:
          node-version: ${{ matrix.node }}
      - run: npm ci
      - run: npm test
      - run: cargo build --locked
      - run: cargo test --locked
YML
mv "$tmp" .github/workflows/ci.yml
# Then a small follow-up edit in place.
cat >> .github/workflows/ci.yml <<'YML'
      - run: npm run lint
YML
tmp="package.json.tmp$$"
cat > "$tmp" <<'JSON'
{
  "name": "tiny-web",
  "version": "1.0.0",
  "main": "src/index.js",
  "scripts": {
    "test": "node --test",
    "lint": "eslint src"
  },
  "dependencies": {
    "express": "^4.19.2",
    "zod": "^3.23.8"
  },
  "devDependencies": {
    "eslint": "^9.9.0"
  }
}
JSON
mv "$tmp" package.json
sed -i 's/^\tcargo test$/\tcargo test --all-features/' Makefile
printf 'lint:\n\tnpx eslint src\n' >> Makefile
grep -q 'matrix' .github/workflows/ci.yml
grep -q '"lint"' package.json
grep -q 'all-features' Makefile
if command -v node >/dev/null 2>&1; then
  node -e 'const p = require("./package.json"); if (!p.scripts.lint) process.exit(1)'
fi
echo ok
