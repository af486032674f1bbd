"""A stand-in of the OpenAI Chat Completions API (streaming and not) on HTTPS ADDR:443 with a
cert for api.openai.com. A turn without a tool result is answered with a call of the
`get_weather` tool; a turn carrying its result gets the text reply. With EXPECT_KEY set, a
request whose bearer token is not that value gets a 401.
Usage: openai_standin.py CERT KEY ADDR [REPLY]"""
import http.server, json, os, ssl, sys
cert, key, addr = sys.argv[1], sys.argv[2], sys.argv[3]
REPLY = sys.argv[4] if len(sys.argv) > 4 else "sunny in Paris"
EXPECT_KEY = os.environ.get("EXPECT_KEY")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if EXPECT_KEY is not None and self.headers.get("authorization") != f"Bearer {EXPECT_KEY}":
            return self._json(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})
        if not self.path.startswith("/v1/chat/completions"):
            return self._json(404, {"error": {"message": "no"}})
        answered = any(m.get("role") == "tool" for m in body.get("messages", []))
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
        base = {"id": "chatcmpl-1", "created": 1, "model": body.get("model", "gpt-test")}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": REPLY if answered else None}
            if not answered: msg["tool_calls"] = [call]
            return self._json(200, dict(base, object="chat.completion", choices=[{"index": 0, "message": msg,
                "finish_reason": "stop" if answered else "tool_calls"}], usage={"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}))
        self.send_response(200); self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        def ev(obj):
            chunk = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)); self.wfile.flush()
        chunk = dict(base, object="chat.completion.chunk")
        if answered:
            for part in [REPLY[:5], REPLY[5:]]:
                ev(dict(chunk, choices=[{"index": 0, "delta": {"content": part}, "finish_reason": None}]))
            ev(dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
        else:
            ev(dict(chunk, choices=[{"index": 0, "delta": {"tool_calls": [dict(call, index=0)]}, "finish_reason": None}]))
            ev(dict(chunk, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]))
        ev(dict(chunk, choices=[], usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}))
        ev("[DONE]")
        self.wfile.write(b"0\r\n\r\n"); self.wfile.flush()
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
srv = S((addr, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", flush=True)
srv.serve_forever()
