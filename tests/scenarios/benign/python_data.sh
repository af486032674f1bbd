#!/bin/sh
# Data munging in python: CSV in, JSON out, a sqlite database.
set -e
/usr/bin/python3 - <<'PY'
import csv, json, sqlite3
with open('in.csv', 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['name', 'n'])
    for i in range(500):
        w.writerow([f'item{i}', i])
rows = list(csv.DictReader(open('in.csv')))
json.dump({'total': sum(int(r['n']) for r in rows)}, open('out.json', 'w'))
db = sqlite3.connect('data.db')
db.execute('create table t (name text, n int)')
db.executemany('insert into t values (?, ?)', [(r['name'], int(r['n'])) for r in rows])
db.commit()
assert db.execute('select sum(n) from t').fetchone()[0] == 124750
PY
grep -q 124750 out.json
echo ok
