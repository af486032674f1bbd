"""A stand-in of the OpenAI Responses API (streaming, server-sent events) for the Codex CLI, on
HTTPS ADDR:443 with the certificate CERT/KEY. It scripts one task in two turns: while the
request holds no tool output it answers with one call of the shell tool the CLI offers, running
COMMAND; once the tool's output comes back it answers with a final message quoting the end of
that output, so a test sees whether the command really ran. Every request is logged to stderr
(path, tools offered, whether a tool output came back); the tool output to LOG when given.
$STANDIN_THINK seconds pass before the answer to a tool's output (a model's latency).
Usage: responses_standin.py CERT KEY ADDR COMMAND [LOG]"""
import json, os, sys, time

from https_standin import Handler, serve

cert, key, addr, command = sys.argv[1:5]
log = sys.argv[5] if len(sys.argv) > 5 else None
THINK = float(os.environ.get("STANDIN_THINK", "0"))


def tool_outputs(body):
    items = body.get("input") or []
    return [i for i in items if isinstance(i, dict) and i.get("type") in ("function_call_output", "custom_tool_call_output")]


def offered(body):
    """Every tool the request offers: top-level ones and those in `additional_tools` items,
    namespaces flattened."""
    found = []

    def walk(ts):
        for t in ts or []:
            if isinstance(t, dict):
                found.append(t)
                walk(t.get("tools"))

    walk(body.get("tools"))
    for i in body.get("input") or []:
        if isinstance(i, dict) and i.get("type") == "additional_tools":
            walk(i.get("tools"))
    return found


def shell_call(tools):
    """The output item calling whichever shell tool this CLI version offers."""
    names = {t.get("name"): t for t in tools}
    if names.get("exec", {}).get("type") == "custom":
        # Code mode: the one tool runs JavaScript, which reaches the shell tool as tools.exec_command.
        js = f"const r = await tools.exec_command({{cmd: {json.dumps(command)}}});\ntext(r);\n"
        return {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_1", "name": "exec", "input": js}
    if "exec_command" in names:
        name, args = "exec_command", {"cmd": command}
    elif "shell_command" in names:
        name, args = "shell_command", {"command": command}
    else:
        name, args = "shell", {"command": ["bash", "-lc", command]}
    return {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": name, "arguments": json.dumps(args)}


def text_of(output):
    o = output.get("output")
    if isinstance(o, str):
        return o
    if isinstance(o, list):
        return "".join(p.get("text", "") for p in o if isinstance(p, dict))
    return json.dumps(o)


class H(Handler):
    def do_GET(self):
        sys.stderr.write(f"GET {self.path}\n")
        sys.stderr.flush()
        if self.headers.get("Upgrade", "").lower() == "websocket":
            # No WebSocket transport here: 426 makes the CLI use HTTPS at once (a 404 is retried).
            return self._json(426, {"error": {"message": "use https", "type": "invalid_request_error"}})
        if self.path.startswith("/v1/models"):
            return self._json(200, {"object": "list", "data": []})
        self._json(404, {"error": {"message": "not here", "type": "invalid_request_error"}})

    def do_POST(self):
        if log:  # the key each request carried, for the test to check what reached the API
            with open(log + ".keys", "a") as k:
                k.write((self.headers.get("authorization", "")) + "\n")
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        outs = tool_outputs(body)
        if os.environ.get("STANDIN_DUMP"):
            with open(os.environ["STANDIN_DUMP"], "a") as f:
                f.write(json.dumps(body) + "\n")
        tools = offered(body)
        sys.stderr.write(f"POST {self.path} tools={[t.get('name') for t in tools]} outputs={len(outs)}\n")
        sys.stderr.flush()
        if not self.path.startswith("/v1/responses"):
            return self._json(404, {"error": {"message": "not here", "type": "invalid_request_error"}})
        if outs:
            said = text_of(outs[-1])
            if log:
                with open(log, "a") as f:
                    f.write(said + "\n")
            # A model takes its time: THINK seconds before the answer to a tool's output.
            time.sleep(THINK)
            last = said.strip().splitlines()[-1] if said.strip() else ""
            item = {"type": "message", "role": "assistant", "id": "msg_2",
                    "content": [{"type": "output_text", "text": f"done: {last}", "annotations": []}]}
        else:
            item = shell_call(tools)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        resp = {"id": "resp_standin", "object": "response", "status": "in_progress", "model": body.get("model", "x"), "output": []}

        def ev(data):
            self.wfile.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        ev({"type": "response.created", "response": resp})
        ev({"type": "response.output_item.added", "output_index": 0, "item": item})
        if item["type"] == "message":
            ev({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "item_id": item["id"],
                "delta": item["content"][0]["text"]})
        ev({"type": "response.output_item.done", "output_index": 0, "item": item})
        done = dict(resp, status="completed", output=[item],
                    usage={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15,
                           "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}})
        ev({"type": "response.completed", "response": done})
        self.close_connection = True


serve(H, cert, key, addr)
