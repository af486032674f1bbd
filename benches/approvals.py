"""Called by benches/approvals.sh: grant/revoke latency, the request round trip through
`cordon approve`, and the launch cost of `approvals.requests`."""
import os, statistics, subprocess, sys, tempfile, time

CORDON = sys.argv[1]
N = int(os.environ.get("N", "20"))
ws = tempfile.mkdtemp(prefix="cordon-approvals-bench.")
os.chmod(ws, 0o755)
home = os.path.join(ws, "home")
os.makedirs(os.path.join(home, "data"))
with open(os.path.join(home, "data", "x"), "w") as f:
    f.write("x\n")

def profile(name, body):
    p = os.path.join(ws, name + ".toml")
    with open(p, "w") as f:
        f.write('extends = "default"\n' + body)
    return p

def cordon(*args, check=True):
    return subprocess.run([CORDON, *args], capture_output=True, text=True, check=check)

def stats(xs):
    xs = sorted(xs)
    return "median %6.2f ms  p90 %6.2f ms  (n=%d)" % (statistics.median(xs), xs[int(len(xs) * 0.9) - 1], len(xs))

def sandbox_of(marker, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        for line in cordon("ps").stdout.splitlines():
            if marker in line:
                return line.split()[0]
        time.sleep(0.05)
    raise SystemExit("the sandbox never showed up")

ASKING = profile("asking", '[grants]\nread = ["{home}/data"]\n[approvals]\nrequests = "ask"\ntimeout = "30s"\nper_minute = 1000\n')
PLAIN = profile("plain", "")

# 1. grant and revoke, end to end (the command returns once the mount changed).
marker = "approvals-bench-grant"
run = subprocess.Popen([CORDON, "run", "-q", "--profile", ASKING, "--workspace", ws, "--home", home, "--",
                        "/bin/sh", "-c", "sleep 60 # " + marker], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
sb = sandbox_of(marker)
grant, revoke = [], []
for i in range(N):
    t = time.perf_counter()
    cordon("grant", sb, "--read", os.path.join(home, "data"), "--for", "10m")
    grant.append((time.perf_counter() - t) * 1e3)
    t = time.perf_counter()
    cordon("revoke", sb, str(i + 1))
    revoke.append((time.perf_counter() - t) * 1e3)
t = time.perf_counter()
for _ in range(N):
    cordon("grants", sb)
floor = (time.perf_counter() - t) * 1e3 / N
cordon("kill", sb)
run.wait()
print("cordon grant --read   " + stats(grant))
print("cordon revoke         " + stats(revoke))
print("  (any cordon command's start and socket round trip, `cordon grants`: %.2f ms)" % floor)

# 2. an agent's request, approved with `cordon approve`: from the approve command's start to
#    the agent holding the grant (its own clock reading after cordon-request returned); each
#    grant is revoked before the next request, so each approval changes the mounts.
marker = "approvals-bench-request"
agent = (
    "import subprocess, sys, time\n"
    "for i in range(%d):\n"
    "    subprocess.run(['cordon-request', '--read', %r, '--for', '1m'], capture_output=True)\n"
    "    print(time.time_ns(), flush=True)\n" % (N, os.path.join(home, "data"))
)
with open(os.path.join(ws, "agent.py"), "w") as f:
    f.write(agent + "# " + marker + "\n")
run = subprocess.Popen([CORDON, "run", "-q", "--profile", ASKING, "--workspace", ws, "--home", home, "--",
                        "/usr/bin/python3", os.path.join(ws, "agent.py")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
sb = sandbox_of("agent.py")
trip, approve_cmd = [], []
for i in range(N):
    end = time.time() + 20
    while time.time() < end:
        out = cordon("pending", sb).stdout
        if out.startswith(sb + "/"):
            break
        time.sleep(0.002)
    rid = out.split()[0]
    t0 = time.time_ns()
    p = time.perf_counter()
    cordon("approve", rid)
    approve_cmd.append((time.perf_counter() - p) * 1e3)
    got = int(run.stdout.readline())
    trip.append((got - t0) / 1e6)
    # Hidden again, so the next approval's grant mounts for real.
    cordon("revoke", sb, str(i + 1))
run.wait()
print("request round trip (cordon approve → the agent holds the grant)  " + stats(trip))
print("  of which the `cordon approve` command itself                    " + stats(approve_cmd))

# 3. launch cost of a sandbox that takes requests (request directory, two more mounts, the
#    socket), interleaved with one that does not.
plain, asking = [], []
for _ in range(N):
    for prof, into in ((PLAIN, plain), (ASKING, asking)):
        t = time.perf_counter()
        subprocess.run([CORDON, "run", "-q", "--profile", prof, "--workspace", ws, "--home", home, "--", "/bin/true"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        into.append((time.perf_counter() - t) * 1e3)
print("cordon run -- /bin/true, default            " + stats(plain))
print("cordon run -- /bin/true, requests = \"ask\"   " + stats(asking))
print("ratio (requests / default, medians): %.2fx" % (statistics.median(asking) / statistics.median(plain)))
subprocess.run(["rm", "-rf", ws])
