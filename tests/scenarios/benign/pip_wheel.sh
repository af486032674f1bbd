#!/bin/sh
# pip install of a local wheel into the workspace.
set -e
/usr/bin/python3 - <<'PY'
import zipfile
with zipfile.ZipFile('mypkg-0.1-py3-none-any.whl', 'w') as z:
    z.writestr('mypkg/__init__.py', 'X = 42\n')
    z.writestr('mypkg-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\nName: mypkg\nVersion: 0.1\n')
    z.writestr('mypkg-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\nGenerator: cordon\nRoot-Is-Purelib: true\nTag: py3-none-any\n')
    z.writestr('mypkg-0.1.dist-info/RECORD', '')
PY
/usr/bin/python3 -m pip install -q --no-index --no-deps --no-cache-dir --disable-pip-version-check --target site mypkg-0.1-py3-none-any.whl 2>/dev/null
test "$(PYTHONPATH=site /usr/bin/python3 -c 'import mypkg; print(mypkg.X)')" = 42
echo ok
