"""What the model-API stand-ins share: a JSON reply, and serving one handler class over HTTPS
on ADDR:443 (or $STANDIN_PORT) with CERT/KEY (printing "listening" once the socket is bound)."""
import http.server, json, os, ssl


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(handler, cert, key, addr):
    srv = Server((addr, int(os.environ.get("STANDIN_PORT", "443"))), handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("listening", flush=True)
    srv.serve_forever()
