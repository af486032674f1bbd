#!/bin/sh
# A small package and its pytest suite.
set -e
mkdir -p calc tests
printf 'def mul(a, b):\n    return a * b\n' > calc/__init__.py
printf 'from calc import mul\n\ndef test_mul():\n    assert mul(6, 7) == 42\n\ndef test_zero():\n    assert mul(0, 9) == 0\n' > tests/test_calc.py
PYTHONPATH=. /usr/bin/python3 -m pytest -q -p no:cacheprovider tests 2>&1 | grep -q "2 passed"
echo ok
