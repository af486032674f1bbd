"""A stand-in of the Anthropic Messages API (streaming and not) for Claude Code, on HTTPS
ADDR:443 with a cert for api.anthropic.com. Logs every request path to stderr. With
EXPECT_KEY set, a request whose x-api-key is not that value gets a 401.
Usage: messages_standin.py CERT KEY ADDR [REPLY]"""
import http.server, json, os, ssl, sys, threading
EXPECT_KEY = os.environ.get("EXPECT_KEY")
# With TOOL_COMMAND set, a turn that does not answer a tool call is answered with a call of
# the Bash tool running it (then the next turn, carrying its result, gets the text reply).
TOOL_COMMAND = os.environ.get("TOOL_COMMAND")
def answers_a_tool(body):
    last = (body.get("messages") or [{}])[-1]
    content = last.get("content")
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
cert, key, addr = sys.argv[1], sys.argv[2], sys.argv[3]
REPLY = sys.argv[4] if len(sys.argv) > 4 else "stand-in says hi"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")
    def _json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        sys.stderr.write(f"GET {self.path}\n"); sys.stderr.flush()
        if self.path == "/v1/echo":  # a careless service quoting the key back
            return self._json(401, {"error": f"invalid key {self.headers.get('x-api-key')}"})
        self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})
    def do_POST(self):
        body = self._body()
        if EXPECT_KEY is not None and self.headers.get("x-api-key") != EXPECT_KEY:
            sys.stderr.write("POST with the wrong key\n"); sys.stderr.flush()
            return self._json(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        sys.stderr.write(f"POST {self.path} stream={body.get('stream')} model={body.get('model')}\n"); sys.stderr.flush()
        if not self.path.startswith("/v1/messages"):
            return self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "no"}})
        if self.path.startswith("/v1/messages/count_tokens"):
            return self._json(200, {"input_tokens": 10})
        msg = {"id": "msg_standin", "type": "message", "role": "assistant", "model": body.get("model", "x"),
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 10, "output_tokens": 1}}
        use_tool = TOOL_COMMAND is not None and not answers_a_tool(body)
        if use_tool:
            tool = {"type": "tool_use", "id": "toolu_standin1", "name": "Bash", "input": {"command": TOOL_COMMAND, "description": "run it"}}
            sys.stderr.write("answering with a tool call\n"); sys.stderr.flush()
        if not body.get("stream") and use_tool:
            msg["content"] = [tool]; msg["stop_reason"] = "tool_use"
            return self._json(200, msg)
        if not body.get("stream"):
            msg["content"] = [{"type": "text", "text": REPLY}]; msg["stop_reason"] = "end_turn"
            return self._json(200, msg)
        # Chunked, as real APIs stream (a stream ended by closing the connection cannot be
        # told from a cut one).
        self.send_response(200); self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache"); self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
        def ev(name, data):
            chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)); self.wfile.flush()
        ev("message_start", {"type": "message_start", "message": msg})
        if use_tool:
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": tool["id"], "name": "Bash", "input": {}}})
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": json.dumps(tool["input"])}})
            ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 9}})
        else:
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": REPLY}})
            ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 5}})
        ev("message_stop", {"type": "message_stop"})
        self.wfile.write(b"0\r\n\r\n"); self.wfile.flush()
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
srv = S((addr, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print("listening", flush=True)
srv.serve_forever()
