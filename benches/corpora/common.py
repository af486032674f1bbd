"""Shared by the corpus generators (benches/corpora/*.py, run by benches/baseline_eval.sh).

A generator records programs with `strace -f -qq -e trace=all` and writes each run as one
file of x86_64 syscall numbers (whitespace-separated, the order strace saw them in; the
processes and threads of a run are interleaved, as a host recorder sees them), into
OUT/benign/ or OUT/attack/.

Safety: every run happens as `nobody` (strace -u), in a scratch directory under /tmp with a
scratch HOME full of fake keys; network traffic goes only to listeners on 127.0.0.1 that the
generator itself runs; every loop is bounded and every run has a timeout.
"""

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

NOBODY = 65534
TIMEOUT = 30
_LINE = re.compile(r"^\d+\s+([a-z_][a-z0-9_]*)\(")


def syscall_numbers():
    """x86_64 syscall name -> number, from the kernel headers."""
    table = {}
    with open("/usr/include/x86_64-linux-gnu/asm/unistd_64.h") as f:
        for line in f:
            m = re.match(r"#define __NR_(\w+)\s+(\d+)", line)
            if m:
                table[m.group(1)] = int(m.group(2))
    return table


NUMBERS = syscall_numbers()


def numbers_of(strace_out):
    """The syscall numbers of an `strace -f -o` file, in order; a call split by another
    process's calls (`<unfinished ...>` / `<... resumed>`) counts once, where it started."""
    out = []
    with open(strace_out, errors="replace") as f:
        for line in f:
            m = _LINE.match(line)
            if m and m.group(1) in NUMBERS:
                out.append(NUMBERS[m.group(1)])
    return out


class Corpus:
    """Where one corpus's traces go, and the scratch space its programs run in."""

    def __init__(self, out, seed):
        self.out = out
        self.rng = random.Random(seed)
        for kind in ("benign", "attack"):
            os.makedirs(os.path.join(out, kind), exist_ok=True)
        self.count = {"benign": 0, "attack": 0}
        self.scratch = tempfile.mkdtemp(prefix="cordon-corpus.")
        os.chmod(self.scratch, 0o755)
        self.home = os.path.join(self.scratch, "home")
        fake_home(self.home, self.rng)

    def workdir(self):
        """A fresh directory the run may write, owned by nobody."""
        d = tempfile.mkdtemp(dir=self.scratch, prefix="w.")
        os.chown(d, NOBODY, NOBODY)
        return d

    def record(self, kind, name, argv, cwd=None, stdin=None, during=None, timeout=TIMEOUT):
        """Run argv as nobody under strace; write its syscall numbers as the next trace of
        `kind`. `during(proc)`, if given, runs beside the program (a client or a listener's
        driver) and may end it. Returns the number of syscalls recorded."""
        cwd = cwd or self.workdir()
        raw = os.path.join(self.scratch, "strace.out")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "LANG": "C",
               "USER": "nobody", "TMPDIR": cwd, "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = ["strace", "-f", "-qq", "-e", "trace=all", "-u", "nobody", "-o", raw, "--"] + argv
        p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        if stdin is not None:
            try:
                p.stdin.write(stdin.encode())
                p.stdin.close()
            except BrokenPipeError:
                pass
        if during:
            during(p)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        seq = numbers_of(raw)
        os.unlink(raw)
        if len(seq) < 10:
            print(f"  {kind}/{name}: only {len(seq)} syscalls, left out", file=sys.stderr)
            return 0
        self.count[kind] += 1
        path = os.path.join(self.out, kind, f"{self.count[kind]:04d}-{name}.txt")
        with open(path, "w") as f:
            f.write(" ".join(map(str, seq)) + "\n")
        return len(seq)

    def close(self):
        subprocess.run(["chattr", "-R", "-ia", self.scratch], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.scratch, ignore_errors=True)
        print(f"{self.out}: {self.count['benign']} benign, {self.count['attack']} attack traces")


def fake_home(home, rng):
    """A scratch home that looks lived in: keys, cloud credentials, shell rc files, notes."""
    files = {
        ".ssh/id_rsa": "-----BEGIN OPENSSH PRIVATE KEY-----\nFAKEFAKEFAKE\n-----END OPENSSH PRIVATE KEY-----\n",
        ".ssh/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\nFAKE\n-----END OPENSSH PRIVATE KEY-----\n",
        ".ssh/known_hosts": "example.org ssh-ed25519 AAAAFAKE\n",
        ".aws/credentials": "[default]\naws_access_key_id = AKIAFAKEFAKEFAKE\naws_secret_access_key = fake\n",
        ".config/gh/hosts.yml": "github.com:\n  oauth_token: ghp_fakefakefake\n",
        ".docker/config.json": '{"auths": {"x": {"auth": "ZmFrZQ=="}}}\n',
        ".netrc": "machine example.org login me password fake\n",
        ".bashrc": "export PS1='$ '\nalias ll='ls -l'\n",
        ".profile": "PATH=$HOME/bin:$PATH\n",
        ".gitconfig": "[user]\n\tname = Nobody\n\temail = nobody@example.org\n",
        "notes/todo.md": "- buy milk\n",
        "project/.env": "DATABASE_URL=postgres://u:fake@localhost/db\nAPI_TOKEN=fake\n",
    }
    for i in range(20):
        files[f"docs/doc{i}.txt"] = "lorem ipsum %d\n" % rng.randrange(10 ** 6) * rng.randrange(1, 40)
    for rel, text in files.items():
        p = os.path.join(home, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", home], check=True)


def listener(handler):
    """A TCP listener on 127.0.0.1 (an ephemeral port) that serves one connection with
    `handler(conn)` in a thread. Returns (port, thread)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    s.settimeout(TIMEOUT)

    def serve():
        try:
            conn, _ = s.accept()
            conn.settimeout(10)
            with conn:
                handler(conn)
        except OSError:
            pass
        finally:
            s.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return s.getsockname()[1], t


def shell_driver(commands):
    """A listener's handler for a reverse shell: send each command, read what comes back."""
    def handle(conn):
        for c in commands:
            try:
                conn.sendall((c + "\n").encode())
                time.sleep(0.15)
                conn.recv(65536)
            except OSError:
                return
        try:
            conn.sendall(b"exit\n")
        except OSError:
            pass
    return handle


def sink(conn):
    """A listener's handler that takes everything sent (exfiltration)."""
    while True:
        try:
            if not conn.recv(65536):
                return
        except OSError:
            return


# What an attacker's reverse shell and web shell are asked to run (URL-encoded for the latter).
def shell_commands(home, v):
    return ["id", "uname -a", "ls -la " + home, "cat /etc/passwd"][: 2 + v]


WEB_PATHS = ["/id", "/uname%20-a", "/cat%20/etc/passwd", "/ls%20-la%20%2F", "/ps%20aux"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def web_client(port, paths):
    """Drive a web shell: wait for it to listen, request each path, then /quit."""
    def drive(proc):
        deadline = time.time() + 15
        while time.time() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        for p in list(paths) + ["/quit"]:
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(f"GET {p} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
                while c.recv(65536):
                    pass
                c.close()
            except OSError:
                pass
    return drive


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    os.chown(path, NOBODY, NOBODY)


def main(benign, attacks, default_benign):
    """`python3 corpus.py OUT [BENIGN]`: build the corpus into OUT."""
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else default_benign
    c = Corpus(out, seed=sum(map(ord, os.path.basename(sys.argv[0]))))
    start = time.time()
    try:
        benign(c, n)
        attacks(c)
    finally:
        c.close()
    print(f"  {time.time() - start:.0f} s")
