#!/bin/sh
# Short interpreter sessions fed on stdin, as agents run snippets.
set -e
printf 'import math\nprint(int(math.factorial(10)))\n' | /usr/bin/python3 - | grep -qx 3628800
printf 'console.log([1,2,3].map(x => x * 2).join(","))\n' | node - | grep -qx 2,4,6
printf 'echo $((6 * 7))\n' | sh | grep -qx 42
echo ok
