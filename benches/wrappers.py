"""The wrappers the side-by-side benches time (benches/compare.py, benches/agent.py): the same
policy for each — workspace read-write, everything else read-only, ~/.ssh hidden, no network."""
import os, statistics, subprocess, time

HOME = os.path.expanduser("~")

def wrappers(cordon_bin, ws):
    """(name, wrap) pairs: "cordon" has the eBPF probes attached (the default); "cordon-np" is
    --no-probes; "cordon-proxy" is `networked` (network.mode = "proxy"); "cordon-process" is
    `default` with `[monitor] visibility = "process"` (no syscall tracepoints)."""
    process_profile = os.path.join(ws, ".process-profile.toml")
    with open(process_profile, "w") as f:
        f.write('extends = "default"\n[monitor]\nvisibility = "process"\n')

    def cordon(cmd):
        return [cordon_bin, "run", "-q", "--profile", "default", "--workspace", ws, "--"] + cmd

    def cordon_proxy(cmd):
        return [cordon_bin, "run", "-q", "--profile", "networked", "--workspace", ws, "--"] + cmd

    def cordon_unmonitored(cmd):
        return [cordon_bin, "run", "-q", "--no-probes", "--profile", "default", "--workspace", ws, "--"] + cmd

    def cordon_process(cmd):
        return [cordon_bin, "run", "-q", "--profile", process_profile, "--workspace", ws, "--"] + cmd

    # bwrap cannot hide a directory that does not exist (it would have to create it on the
    # read-only root).
    hide_ssh = ["--tmpfs", f"{HOME}/.ssh"] if os.path.isdir(f"{HOME}/.ssh") else []

    def bwrap(cmd):
        return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", ws, ws,
                *hide_ssh, "--unshare-all", "--unshare-user", "--disable-userns",
                "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
                "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", HOME,
                "--chdir", ws, "--"] + cmd

    def firejail(cmd):
        return ["firejail", "--quiet", "--noprofile", "--net=none", "--read-only=/", f"--read-write={ws}",
                f"--blacklist={HOME}/.ssh", "--caps.drop=all", "--seccomp", "--nonewprivs", "--private-dev",
                "--nogroups", "--disable-mnt", "--restrict-namespaces", "--protocol=unix,inet,inet6",
                "--ipc-namespace", "--"] + cmd

    def bare(cmd):
        return cmd

    return {"bare": bare, "cordon": cordon, "cordon-np": cordon_unmonitored, "cordon-proxy": cordon_proxy,
            "cordon-process": cordon_process, "bwrap": bwrap, "firejail": firejail}


def once(argv, ws):
    """Seconds one wrapped command takes; a failure stops the bench with its stderr."""
    t = time.perf_counter()
    r = subprocess.run(argv, cwd=ws, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return time.perf_counter() - t


# Wrappers whose sandbox has visibility "full": the syscall tracepoints stay attached 2 s
# after it ends (`cordon probes linger`), and every process on the host pays the traced-syscall
# path meanwhile — the next wrapper's run too.
FULL = {"cordon", "cordon-proxy"}


def tracepoints_detached(limit_s=6.0):
    """Wait (at most `limit_s`) until no cordon build has the syscall tracepoints attached."""
    import glob
    end = time.monotonic() + limit_s
    while glob.glob("/sys/fs/bpf/cordon/*/links/sys_enter") and time.monotonic() < end:
        time.sleep(0.05)


def samples(cmd, names, wraps, runs, ws, settle=False):
    """Seconds of each run per wrapper: one warm-up each, then the wrappers run by run in
    turn, so drift on a shared VM hits all of them alike. `settle`: after a `full` wrapper,
    wait until its tracepoints are detached before another one runs (workloads that make many
    syscalls; a launch alone hardly notices them)."""
    out = {w: [] for w in names}
    order = [w for _ in range(runs + 1) for w in names]
    waited = False
    for i, w in enumerate(order):
        if waited:
            # The pause left the VM idle (a first launch after idle is slower, issue 19) and let
            # the lingerer go: one untimed launch of the same wrapper warms the VM and starts a
            # new lingerer, given a moment to start (its exec and attaches would otherwise
            # compete with the timed run), like back-to-back runs.
            once(wraps[w](["/bin/true"]), ws)
            time.sleep(0.3)
            waited = False
        took = once(wraps[w](cmd), ws)
        if i >= len(names):
            out[w].append(took)
        nxt = order[i + 1] if i + 1 < len(order) else None
        if settle and w in FULL and nxt is not None and nxt not in FULL:
            tracepoints_detached()
            waited = True
    return out


def interleaved(cmd, names, wraps, runs, ws, settle=False):
    """Median seconds per wrapper (see `samples`)."""
    return {w: statistics.median(v) for w, v in samples(cmd, names, wraps, runs, ws, settle).items()}


def p99(values):
    """The 99th percentile (nearest rank)."""
    v = sorted(values)
    return v[min(len(v) - 1, max(0, -(-99 * len(v) // 100) - 1))]
