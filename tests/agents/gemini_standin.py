"""A stand-in of the Gemini API (generateContent and streamGenerateContent, server-sent events
or JSON) for the Gemini CLI, on HTTPS ADDR:443 with the certificate CERT/KEY. It scripts one
task in two turns: while the conversation holds no function response it answers with one call
of the CLI's shell tool running COMMAND; once the tool's response comes back it answers with a
final text quoting the end of that output, so a test sees whether the command really ran.
Requests the CLI makes for itself (a session summary, routing, the next-speaker check) get a
plain text answer. Every request is logged to stderr; the tool output to LOG when given. $STANDIN_THINK
seconds pass before the answer to a tool's output (a model's latency).
Usage: gemini_standin.py CERT KEY ADDR COMMAND [LOG]"""
import json, os, sys, time

from https_standin import Handler, serve

cert, key, addr, command = sys.argv[1:5]
log = sys.argv[5] if len(sys.argv) > 5 else None
THINK = float(os.environ.get("STANDIN_THINK", "0"))


def declared(body):
    names = []
    for t in body.get("tools") or []:
        for f in t.get("functionDeclarations") or []:
            names.append(f.get("name"))
    return names


def responses(body):
    out = []
    for c in body.get("contents") or []:
        for p in c.get("parts") or []:
            if "functionResponse" in p:
                out.append(p["functionResponse"])
    return out


def text_of(resp):
    r = resp.get("response")
    if isinstance(r, dict):
        for k in ("output", "llmContent", "result"):
            if isinstance(r.get(k), str):
                return r[k]
        return json.dumps(r)
    return json.dumps(resp)


def reply(body):
    tools = declared(body)
    outs = responses(body)
    if outs:
        said = text_of(outs[-1])
        if log:
            with open(log, "a") as f:
                f.write(said + "\n")
        # A model takes its time: THINK seconds before the answer to a tool's output.
        time.sleep(THINK)
        # The CLI wraps the output: `<untrusted_context>`, `Output: …`, `Process Group PGID: …`.
        lines = [l.removeprefix("Output:").strip() for l in said.splitlines()]
        lines = [l for l in lines if l and not l.startswith("<") and not l.startswith("Process Group")]
        return [{"text": f"done: {lines[-1] if lines else ''}"}]
    if "run_shell_command" in tools:
        return [{"functionCall": {"name": "run_shell_command", "args": {"command": command, "description": "the task"}}}]
    # Not the main conversation (no shell tool offered: routing, summaries): a plain answer,
    # or an object with what the schema requires.
    schema = (body.get("generationConfig") or {}).get("responseJsonSchema")
    if schema:
        fill = {"STRING": "stand-in", "INTEGER": 1, "NUMBER": 1, "BOOLEAN": False}
        props = schema.get("properties") or {}
        obj = {k: fill.get(str(v.get("type", "")).upper(), None) for k, v in props.items()}
        return [{"text": json.dumps(obj)}]
    return [{"text": "ok"}]


class H(Handler):
    def do_GET(self):
        sys.stderr.write(f"GET {self.path}\n")
        sys.stderr.flush()
        self._json(404, {"error": {"code": 404, "message": "not here", "status": "NOT_FOUND"}})

    def do_POST(self):
        if log:  # the key each request carried, for the test to check what reached the API
            with open(log + ".keys", "a") as k:
                k.write((self.headers.get("x-goog-api-key") or self.path.partition("key=")[2]) + "\n")
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        if os.environ.get("STANDIN_DUMP"):
            with open(os.environ["STANDIN_DUMP"], "a") as f:
                f.write(json.dumps({"path": self.path, "body": body}) + "\n")
        sys.stderr.write(f"POST {self.path.split('?')[0]} tools={declared(body)} responses={len(responses(body))}\n")
        sys.stderr.flush()
        path = self.path.split("?")[0]
        if path.endswith(":countTokens"):
            return self._json(200, {"totalTokens": 10})
        if not (path.endswith(":generateContent") or path.endswith(":streamGenerateContent")):
            return self._json(404, {"error": {"code": 404, "message": "not here", "status": "NOT_FOUND"}})
        parts = reply(body)
        chunk = {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
                 "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
                 "modelVersion": "stand-in"}
        if path.endswith(":generateContent"):
            return self._json(200, chunk)
        if "alt=sse" in self.path:
            data = f"data: {json.dumps(chunk)}\r\n\r\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
        else:
            data = json.dumps([chunk]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


serve(H, cert, key, addr)
