#!/bin/sh
# A web app reading its own configuration: .env and .env.local in the project, loaded a few
# times as a dev server restarting would.
set -e
mkdir -p webapp/src
cd webapp
printf 'PORT=8080\nDATABASE_URL=postgres://dev:dev@localhost:5432/webapp\nSESSION_SECRET=dev-only-not-a-secret\nLOG_LEVEL=info\n' > .env
printf 'LOG_LEVEL=debug\nFEATURE_FLAGS=new-ui\n' > .env.local
cat > src/config.py <<'PY'
import os

def load(path):
    conf = {}
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if line and not line.startswith('#') and '=' in line:
                k, v = line.split('=', 1)
                conf[k] = v
    return conf

conf = load('.env')
conf.update(load('.env.local'))
assert conf['PORT'] == '8080' and conf['LOG_LEVEL'] == 'debug'
print('listening on', conf['PORT'])
PY
for restart in 1 2 3 4 5; do
  cat .env .env.local > /dev/null
  grep -q '^PORT=8080$' .env
  if command -v python3 >/dev/null 2>&1; then python3 src/config.py > /dev/null; fi
  sleep 0.2
done
echo ok
