"""A minimal agent in Python: the Responses API over urllib (streamed, server-sent events),
the model's shell calls run with subprocess, until a final answer, which it prints."""
import json, os, subprocess, urllib.request
def ask(items):
    body = {"model": "m", "stream": True, "input": items,
            "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object"}}]}
    req = urllib.request.Request("https://api.openai.com/v1/responses", data=json.dumps(body).encode(),
        headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"], "Content-Type": "application/json"})
    out = []
    with urllib.request.urlopen(req, timeout=30) as r:
        for line in r:
            if line.startswith(b"data: "):
                ev = json.loads(line[6:])
                if ev["type"] == "response.output_item.done":
                    out.append(ev["item"])
    return out
items = [{"role": "user", "content": "fix hello.txt"}]
for _ in range(5):
    reply = ask(items)
    calls = [i for i in reply if i["type"] == "function_call"]
    if not calls:
        print(reply[0]["content"][0]["text"])
        break
    for c in calls:
        argv = json.loads(c["arguments"])["command"]
        done = subprocess.run(argv, capture_output=True, text=True)
        items += [c, {"type": "function_call_output", "call_id": c["call_id"], "output": done.stdout + done.stderr}]
