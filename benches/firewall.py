"""The AI firewall's cost: per-request latency over HTTPS on a reused and on new connections,
and the delay of a streamed response's first event, for the same client bare on the host,
in a `proxy` sandbox that relays the TLS untouched, and in one where cordon intercepts it
(the host in [network.gateway]: TLS terminated, each request read, recorded, searched).
Called by benches/firewall.sh."""
import http.server, json, os, socket, socketserver, ssl, subprocess, sys, tempfile, threading, time

CORDON = sys.argv[1]
N_REUSED = int(os.environ.get("N_REUSED", "1000"))
N_NEW = int(os.environ.get("N_NEW", "200"))
N_SSE = int(os.environ.get("N_SSE", "50"))
ws = tempfile.mkdtemp(prefix="cordon-firewall-bench.")
os.chmod(ws, 0o755)

def openssl(*args):
    subprocess.run(["openssl", *args], cwd=ws, check=True, capture_output=True)
openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA")
openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=bench.fixture.test")
with open(os.path.join(ws, "ext.cnf"), "w") as f:
    f.write("subjectAltName=DNS:bench.fixture.test\n")
openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_GET(self):
        if self.path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                ev = b"data: {\"n\": %d}\n\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev)); self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n"); self.wfile.flush()
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
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(os.path.join(ws, "srv.pem"), os.path.join(ws, "srv.key"))
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
PORT = srv.server_address[1]
threading.Thread(target=srv.serve_forever, daemon=True).start()

CLIENT = r'''
import http.client, json, socket, ssl, sys, time
host, port, n_reused, n_new, n_sse = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
ctx = ssl.create_default_context()   # SSL_CERT_FILE: the test CA bare, cordon's bundle inside
def ms(f):
    t = time.perf_counter(); f(); return (time.perf_counter() - t) * 1000
class Conn(http.client.HTTPSConnection):
    def connect(self):
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def req(conn):
    conn.request("GET", "/small"); r = conn.getresponse(); r.read()
c = Conn(host, port, context=ctx)
for _ in range(50): req(c)
reused = [ms(lambda: req(c)) for _ in range(n_reused)]
def fresh():
    k = Conn(host, port, context=ctx); req(k); k.close()
new = [ms(fresh) for _ in range(n_new)]
first = []
for _ in range(n_sse):
    c.request("GET", "/sse"); t = time.perf_counter(); r = c.getresponse()
    size = int(r.fp.readline().strip(), 16)  # the first chunk: the first event
    r.fp.read(size + 2)
    first.append((time.perf_counter() - t) * 1000)
    while True:
        size = int(r.fp.readline().strip() or b"0", 16)
        if size == 0:
            r.fp.readline(); break
        r.fp.read(size + 2)
    r.close()
print(json.dumps({"reused": reused, "new": new, "first": first}))
'''
with open(os.path.join(ws, "client.py"), "w") as f:
    f.write(CLIENT)
base = (f'extends = "default"\n[network]\nmode = "proxy"\nallow = ["bench.fixture.test:{PORT}"]\n'
        f'resolve = {{ "bench.fixture.test" = "127.0.0.1" }}\n')
monitor = '[monitor.connects]\nresponse = "log"\nlimit = 200\nwindow = "10s"\n'
relay = os.path.join(ws, "relay.toml")
with open(relay, "w") as f:
    f.write(base + '[environment]\nset = { SSL_CERT_FILE = "' + ws + '/ca.pem" }\n' + monitor)
inter = os.path.join(ws, "intercept.toml")
with open(inter, "w") as f:
    f.write(base + f'upstream_ca = "{ws}/ca.pem"\n[network.gateway]\nhosts = ["bench.fixture.test"]\n' + monitor)

def run(argv, env=None):
    r = subprocess.run(argv, cwd=ws, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed: {r.stderr[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])

args = [str(PORT), str(N_REUSED), str(N_NEW), str(N_SSE)]
# Bare: the name resolves only inside the sandboxes; bare connects to the address.
with open(os.path.join(ws, "bare.py"), "w") as f:
    f.write(CLIENT.replace("super().connect()", "self.host = '127.0.0.1'; super().connect()")
            .replace("ctx = ssl.create_default_context()", "ctx = ssl.create_default_context(); ctx.check_hostname = False"))
bare = run(["/usr/bin/python3", "bare.py", "bench.fixture.test"] + args,
           env=dict(os.environ, SSL_CERT_FILE=os.path.join(ws, "ca.pem")))
relayed = run([CORDON, "run", "-q", "--profile", relay, "--workspace", ws, "--",
               "/usr/bin/python3", "client.py", "bench.fixture.test"] + args)
intercepted = run([CORDON, "run", "-q", "--profile", inter, "--workspace", ws, "--",
                   "/usr/bin/python3", "client.py", "bench.fixture.test"] + args)

def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(p / 100 * len(v)))]
print(f"HTTPS: {N_REUSED} requests on a reused connection, {N_NEW} on new ones (handshake included), "
      f"{N_SSE} streamed responses; same client bare, relayed through the proxy, intercepted")
for k, label in [("reused", "reused connection"), ("new", "new connection"), ("first", "first SSE event")]:
    b, r, i = bare[k], relayed[k], intercepted[k]
    print(f"{label:<18} bare p50 {pct(b, 50):.3f} p99 {pct(b, 99):.3f} | relayed p50 {pct(r, 50):.3f} p99 {pct(r, 99):.3f} "
          f"| intercepted p50 {pct(i, 50):.3f} p99 {pct(i, 99):.3f} ms | interception adds p50 "
          f"{pct(i, 50) - pct(r, 50):+.3f} p99 {pct(i, 99) - pct(r, 99):+.3f} ms over relaying")
srv.shutdown()
subprocess.run(["rm", "-rf", ws])
