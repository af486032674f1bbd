#!/bin/sh
# A node script reading and writing JSON.
set -e
cat > job.js <<'JS'
const fs = require('fs');
const data = Array.from({length: 100}, (_, i) => ({id: i, sq: i * i}));
fs.writeFileSync('data.json', JSON.stringify(data));
const back = JSON.parse(fs.readFileSync('data.json', 'utf8'));
console.log(back.reduce((a, d) => a + d.sq, 0));
JS
test "$(node job.js)" = 328350
echo ok
