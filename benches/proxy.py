"""The egress proxy's cost: per-request latency on a reused and on new connections, and one
bulk download, measured by the same client run bare on the host and inside a `proxy` sandbox
(reaching the fixture by name through `resolve`). Called by benches/proxy.sh."""
import http.server, os, socketserver, statistics, subprocess, sys, tempfile, threading

CORDON = sys.argv[1]
N_REUSED = int(os.environ.get("N_REUSED", "2000"))
N_NEW = int(os.environ.get("N_NEW", "500"))
BULK_MB = int(os.environ.get("BULK_MB", "512"))
BLOCK = b"x" * (1 << 20)

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        # http.server writes the headers and the body separately: without NODELAY the body
        # waits for the client's delayed ACK (~40 ms a request), bare or proxied.
        import socket
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self):
        if self.path == "/bulk":
            self.send_response(200)
            self.send_header("Content-Length", str(BULK_MB << 20))
            self.end_headers()
            for _ in range(BULK_MB):
                self.wfile.write(BLOCK)
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
    def log_message(self, *a):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

srv = Server(("127.0.0.1", 0), Handler)
PORT = srv.server_address[1]
threading.Thread(target=srv.serve_forever, daemon=True).start()

CLIENT = r'''
import http.client, json, socket, sys, time
host, port, n_reused, n_new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def ms(f):
    t = time.perf_counter(); f(); return (time.perf_counter() - t) * 1000
import socket
class Conn(http.client.HTTPConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c = Conn(host, port)
def req(conn):
    conn.request("GET", "/small"); r = conn.getresponse(); r.read()
for _ in range(50): req(c)
reused = [ms(lambda: req(c)) for _ in range(n_reused)]
def fresh():
    k = Conn(host, port); req(k); k.close()
new = [ms(fresh) for _ in range(n_new)]
t = time.perf_counter()
k = http.client.HTTPConnection(host, port); k.request("GET", "/bulk"); r = k.getresponse()
got = 0
while True:
    b = r.read(1 << 20)
    if not b: break
    got += len(b)
secs = time.perf_counter() - t
print(json.dumps({"reused": reused, "new": new, "mb_s": got / secs / (1 << 20)}))
'''
ws = tempfile.mkdtemp(prefix="cordon-proxy-bench.")
os.chmod(ws, 0o755)
with open(os.path.join(ws, "client.py"), "w") as f:
    f.write(CLIENT)
prof = os.path.join(ws, "bench.toml")
with open(prof, "w") as f:
    f.write(f'extends = "default"\n[network]\nmode = "proxy"\nallow = ["bench.fixture.test:{PORT}"]\n'
            f'resolve = {{ "bench.fixture.test" = "127.0.0.1" }}\n'
            # Hundreds of connections in seconds is the point here, not an alarm.
            '[monitor.connects]\nresponse = "log"\nlimit = 200\nwindow = "10s"\n')

def run(argv):
    r = subprocess.run(argv, cwd=ws, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {r.stderr[-800:]}")
    import json
    return json.loads(r.stdout.strip().splitlines()[-1])

args = [str(PORT), str(N_REUSED), str(N_NEW)]
bare = run(["/usr/bin/python3", "client.py", "127.0.0.1"] + args)
boxed = run([CORDON, "run", "-q", "--profile", prof, "--workspace", ws, "--",
             "/usr/bin/python3", "client.py", "bench.fixture.test"] + args)

def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p / 100 * len(v)))]
print(f"{N_REUSED} requests on a reused connection, {N_NEW} on new ones, one {BULK_MB} MiB download; "
      "same client bare on the host and in a proxy sandbox")
for k, label in [("reused", "reused connection"), ("new", "new connection")]:
    b50, b99, p50, p99 = pct(bare[k], 50), pct(bare[k], 99), pct(boxed[k], 50), pct(boxed[k], 99)
    print(f"{label:<18} bare p50 {b50:.3f} ms p99 {b99:.3f} ms | proxied p50 {p50:.3f} ms p99 {p99:.3f} ms "
          f"| added p50 {p50 - b50:+.3f} ms p99 {p99 - b99:+.3f} ms")
print(f"bulk download      bare {bare['mb_s']:.0f} MiB/s | proxied {boxed['mb_s']:.0f} MiB/s | "
      f"ratio {boxed['mb_s'] / bare['mb_s']:.2f}")
srv.shutdown()
subprocess.run(["rm", "-rf", ws])
