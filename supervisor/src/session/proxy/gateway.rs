//! The model gateway: what the agent asked a model API and what the model answered, read
//! from intercepted requests (Anthropic Messages, OpenAI Chat Completions and Responses,
//! streamed or not) into `ModelRequest` / `ModelResponse` events. Pure parsing here; the
//! bytes come from `intercept`. Content is bounded, hashed or left out as the profile says.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::events::pb;
use crate::profile::{Gateway, Record};

/// A model API the gateway understands, told by the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    AnthropicMessages,
    OpenAiChat,
    OpenAiResponses,
}

impl Api {
    pub fn of(path: &str) -> Option<Api> {
        let p = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if p.ends_with("/v1/messages") {
            Some(Api::AnthropicMessages)
        } else if p.ends_with("/chat/completions") {
            Some(Api::OpenAiChat)
        } else if p.ends_with("/v1/responses") {
            Some(Api::OpenAiResponses)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Api::AnthropicMessages => "anthropic.messages",
            Api::OpenAiChat => "openai.chat",
            Api::OpenAiResponses => "openai.responses",
        }
    }
}

/// The gateway's settings and what it remembers across requests (how many messages each
/// conversation had, to record only the new ones).
#[derive(Debug)]
pub struct Recorder {
    pub cfg: Gateway,
    seen: Mutex<HashMap<String, usize>>,
}

impl Recorder {
    pub fn new(cfg: Gateway) -> Self {
        Self {
            cfg,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Content as the profile records it: bounded text, a hash, or nothing.
    fn content(&self, s: &str) -> (String, bool) {
        match self.cfg.record {
            Record::None => (String::new(), false),
            Record::Hash => (hash(s), false),
            Record::Full => bounded(s, self.cfg.max_bytes),
        }
    }

    /// The event for one request body.
    pub fn request(&self, api: Api, host: &str, body: &[u8]) -> pb::ModelRequest {
        let mut ev = pb::ModelRequest {
            api: api.name().into(),
            host: host.into(),
            ..Default::default()
        };
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return ev;
        };
        ev.model = str_at(&v, "model");
        ev.stream = v.get("stream").and_then(Value::as_bool).unwrap_or(false);
        ev.tools = v
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                t.get("name")
                    .or_else(|| t.pointer("/function/name"))
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .collect();
        let messages: Vec<(String, String)> = match api {
            Api::AnthropicMessages | Api::OpenAiChat => v
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|m| (str_at(m, "role"), text_of(m.get("content"))))
                .collect(),
            Api::OpenAiResponses => match v.get("input") {
                Some(Value::String(s)) => vec![("user".into(), s.clone())],
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|m| {
                        let role = m
                            .get("role")
                            .or_else(|| m.get("type"))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        let content = m
                            .get("content")
                            .or_else(|| m.get("output"))
                            .or_else(|| m.get("arguments"));
                        (role, text_of(content))
                    })
                    .collect(),
                _ => Vec::new(),
            },
        };
        ev.total_messages = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        // A conversation is told by its first message; only what it did not have last time
        // is recorded (an agent resends the whole history with every turn).
        let key = format!(
            "{host} {} {}",
            api.name(),
            messages.first().map(|m| hash(&m.1)).unwrap_or_default()
        );
        let before = {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            seen.insert(key, messages.len()).unwrap_or(0)
        };
        let start = if before <= messages.len() { before } else { 0 };
        ev.messages = messages[start..]
            .iter()
            .map(|(role, content)| {
                let (content, truncated) = self.content(content);
                pb::ModelMessage {
                    role: role.clone(),
                    content,
                    truncated,
                }
            })
            .collect();
        ev
    }

    /// The event for one response body (JSON, or the server-sent events of a stream).
    pub fn response(
        &self,
        api: Api,
        host: &str,
        status: u16,
        body: &[u8],
        complete: bool,
    ) -> pb::ModelResponse {
        let mut r = Reply::default();
        if looks_like_sse(body) {
            for data in sse_data(body) {
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    r.stream_event(api, &v);
                }
            }
        } else if let Ok(v) = serde_json::from_slice::<Value>(body) {
            r.whole(api, &v);
        }
        let (text, cut) = self.content(&r.text);
        let mut truncated = cut || !complete;
        let tool_calls = r
            .tools
            .into_iter()
            .map(|t| {
                let (input, cut) = self.content(&t.input);
                truncated |= cut;
                pb::ToolCall {
                    id: t.id,
                    name: t.name,
                    input,
                }
            })
            .collect();
        pb::ModelResponse {
            api: api.name().into(),
            host: host.into(),
            model: r.model,
            status: u32::from(status),
            text,
            tool_calls,
            stop_reason: r.stop,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            truncated,
        }
    }
}

#[derive(Default)]
struct Tool {
    id: String,
    name: String,
    input: String,
}

/// A response assembled from whole bodies or stream events.
#[derive(Default)]
struct Reply {
    model: String,
    text: String,
    tools: Vec<Tool>,
    /// Stream index → position in `tools`.
    tool_at: HashMap<u64, usize>,
    stop: String,
    input_tokens: u64,
    output_tokens: u64,
}

impl Reply {
    fn usage(&mut self, u: Option<&Value>) {
        let Some(u) = u else { return };
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        if let Some(i) = n("input_tokens").or_else(|| n("prompt_tokens")) {
            self.input_tokens = i;
        }
        if let Some(o) = n("output_tokens").or_else(|| n("completion_tokens")) {
            self.output_tokens = o;
        }
    }

    fn tool(&mut self, index: u64, id: &str, name: &str) -> &mut Tool {
        let i = *self.tool_at.entry(index).or_insert_with(|| {
            self.tools.push(Tool::default());
            self.tools.len() - 1
        });
        let t = &mut self.tools[i];
        if !id.is_empty() {
            id.clone_into(&mut t.id);
        }
        if !name.is_empty() {
            name.clone_into(&mut t.name);
        }
        t
    }

    /// A whole (not streamed) response.
    fn whole(&mut self, api: Api, v: &Value) {
        self.model = str_at(v, "model");
        self.usage(v.get("usage"));
        match api {
            Api::AnthropicMessages => {
                self.stop = str_at(v, "stop_reason");
                for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
                    match b.get("type").and_then(Value::as_str) {
                        Some("text") => self.text.push_str(&str_at(b, "text")),
                        Some("tool_use") => self.tools.push(Tool {
                            id: str_at(b, "id"),
                            name: str_at(b, "name"),
                            input: b.get("input").map(Value::to_string).unwrap_or_default(),
                        }),
                        _ => {}
                    }
                }
            }
            Api::OpenAiChat => {
                let choice = v.pointer("/choices/0");
                self.stop = choice.map(|c| str_at(c, "finish_reason")).unwrap_or_default();
                if let Some(m) = choice.and_then(|c| c.get("message")) {
                    self.text.push_str(&str_at(m, "content"));
                    for t in m
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        self.tools.push(Tool {
                            id: str_at(t, "id"),
                            name: t
                                .pointer("/function/name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .into(),
                            input: t
                                .pointer("/function/arguments")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .into(),
                        });
                    }
                }
            }
            Api::OpenAiResponses => {
                self.stop = str_at(v, "status");
                for item in v.get("output").and_then(Value::as_array).into_iter().flatten() {
                    match item.get("type").and_then(Value::as_str) {
                        Some("message") => {
                            for c in item
                                .get("content")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                            {
                                self.text.push_str(&str_at(c, "text"));
                            }
                        }
                        Some("function_call" | "custom_tool_call" | "local_shell_call") => {
                            self.tools.push(Tool {
                                id: str_at(item, "call_id"),
                                name: str_at(item, "name"),
                                input: item
                                    .get("arguments")
                                    .or_else(|| item.get("input"))
                                    .or_else(|| item.get("action"))
                                    .map(|a| a.as_str().map_or_else(|| a.to_string(), String::from))
                                    .unwrap_or_default(),
                            })
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// One event of a streamed response.
    fn stream_event(&mut self, api: Api, v: &Value) {
        match api {
            Api::AnthropicMessages => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    if let Some(m) = v.get("message") {
                        self.model = str_at(m, "model");
                        self.usage(m.get("usage"));
                    }
                }
                Some("content_block_start") => {
                    let b = v.get("content_block");
                    if b.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                        let b = b.unwrap_or(&Value::Null);
                        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tool(index, &str_at(b, "id"), &str_at(b, "name"));
                    }
                }
                Some("content_block_delta") => {
                    let d = v.get("delta").unwrap_or(&Value::Null);
                    match d.get("type").and_then(Value::as_str) {
                        Some("text_delta") => self.text.push_str(&str_at(d, "text")),
                        Some("input_json_delta") => {
                            let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                            let part = str_at(d, "partial_json");
                            self.tool(index, "", "").input.push_str(&part);
                        }
                        _ => {}
                    }
                }
                Some("message_delta") => {
                    if let Some(s) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        s.clone_into(&mut self.stop);
                    }
                    if let Some(o) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                        self.output_tokens = o;
                    }
                }
                _ => {}
            },
            Api::OpenAiChat => {
                if self.model.is_empty() {
                    self.model = str_at(v, "model");
                }
                self.usage(v.get("usage"));
                let Some(c) = v.pointer("/choices/0") else { return };
                if let Some(s) = c.get("finish_reason").and_then(Value::as_str) {
                    s.clone_into(&mut self.stop);
                }
                let d = c.get("delta").unwrap_or(&Value::Null);
                self.text.push_str(&str_at(d, "content"));
                for t in d
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let index = t.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let name = t
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let args = t
                        .pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.tool(index, &str_at(t, "id"), name).input.push_str(args);
                }
            }
            Api::OpenAiResponses => {
                // The final event carries the whole response.
                if v.get("type").and_then(Value::as_str) == Some("response.completed") {
                    if let Some(r) = v.get("response") {
                        self.whole(api, r);
                    }
                }
            }
        }
    }
}

fn str_at(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// A message's content: its text, or its blocks as compact JSON.
fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn hash(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    format!("[sha256:{}]", crate::text::hex(&d))
}

/// `s` cut to at most `max` bytes on a character boundary; whether it was cut.
fn bounded(s: &str, max: u64) -> (String, bool) {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if s.len() <= max {
        return (s.to_string(), false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

fn looks_like_sse(body: &[u8]) -> bool {
    let head = &body[..body.len().min(64)];
    head.starts_with(b"event:") || head.starts_with(b"data:") || head.starts_with(b":")
}

/// The `data:` payloads of a server-sent event stream (multi-line data joined).
fn sse_data(body: &[u8]) -> Vec<&str> {
    let text = std::str::from_utf8(body).unwrap_or_else(|e| {
        // A stream cut mid-character: what came before it.
        std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default()
    });
    text.split("\n\n")
        .flat_map(|ev| ev.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim))
        .filter(|d| !d.is_empty() && *d != "[DONE]")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(record: Record) -> Recorder {
        Recorder::new(Gateway {
            hosts: Vec::new(),
            record,
            max_bytes: 32,
        })
    }

    #[test]
    fn anthropic_requests_record_only_new_messages_and_tools() {
        let r = rec(Record::Full);
        let body = |n: usize| {
            let msgs: Vec<Value> = (0..n)
                .map(|i| serde_json::json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": format!("m{i}")}))
                .collect();
            serde_json::json!({"model": "claude-x", "stream": true, "messages": msgs,
                "tools": [{"name": "bash", "input_schema": {}}]})
            .to_string()
        };
        let a = r.request(Api::AnthropicMessages, "api.anthropic.com", body(1).as_bytes());
        assert_eq!(
            (a.model.as_str(), a.stream, a.total_messages),
            ("claude-x", true, 1)
        );
        assert_eq!(a.tools, ["bash"]);
        assert_eq!(a.messages.len(), 1);
        let b = r.request(Api::AnthropicMessages, "api.anthropic.com", body(3).as_bytes());
        let got: Vec<&str> = b.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(got, ["m1", "m2"]);
    }

    #[test]
    fn an_anthropic_stream_gives_text_tool_calls_and_usage() {
        let r = rec(Record::Full);
        let sse = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":12}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"I will \"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"tu_1\",\"name\":\"Bash\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\": \\\"rm -rf \"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"build/\\\"}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n",
        );
        let m = r.response(Api::AnthropicMessages, "h", 200, sse.as_bytes(), true);
        assert_eq!((m.model.as_str(), m.text.as_str()), ("claude-x", "I will "));
        assert_eq!(m.tool_calls.len(), 1);
        assert_eq!(m.tool_calls[0].name, "Bash");
        assert_eq!(m.tool_calls[0].input, "{\"command\": \"rm -rf build/\"}");
        assert_eq!(
            (m.stop_reason.as_str(), m.input_tokens, m.output_tokens),
            ("tool_use", 12, 7)
        );
        assert!(!m.truncated);
    }

    #[test]
    fn openai_chat_and_responses_whole_and_streamed() {
        let r = rec(Record::Full);
        let chat = r#"{"model":"gpt-x","choices":[{"message":{"content":null,"tool_calls":[{"id":"c1","function":{"name":"shell","arguments":"{\"cmd\":\"ls\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":3}}"#;
        let m = r.response(Api::OpenAiChat, "h", 200, chat.as_bytes(), true);
        assert_eq!(
            (m.tool_calls[0].name.as_str(), m.tool_calls[0].input.as_str()),
            ("shell", "{\"cmd\":\"ls\"}")
        );
        assert_eq!(
            (m.stop_reason.as_str(), m.input_tokens, m.output_tokens),
            ("tool_calls", 5, 3)
        );
        let stream = "data: {\"model\":\"gpt-x\",\"choices\":[{\"delta\":{\"content\":\"he\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let m = r.response(Api::OpenAiChat, "h", 200, stream.as_bytes(), true);
        assert_eq!((m.text.as_str(), m.stop_reason.as_str()), ("hello", "stop"));
        let resp = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-y\",\"status\":\"completed\",\"output\":[{\"type\":\"function_call\",\"call_id\":\"k\",\"name\":\"exec\",\"arguments\":\"{}\"},{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"ok\"}]}],\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}}\n\n";
        let m = r.response(Api::OpenAiResponses, "h", 200, resp.as_bytes(), true);
        assert_eq!(
            (m.model.as_str(), m.text.as_str(), m.tool_calls[0].name.as_str()),
            ("gpt-y", "ok", "exec")
        );
        assert_eq!((m.input_tokens, m.output_tokens), (9, 2));
    }

    #[test]
    fn content_is_bounded_hashed_or_left_out() {
        let long = "x".repeat(40);
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": long}]}).to_string();
        let full = rec(Record::Full).request(Api::OpenAiChat, "h", body.as_bytes());
        assert_eq!(
            (full.messages[0].content.len(), full.messages[0].truncated),
            (32, true)
        );
        let hashed = rec(Record::Hash).request(Api::OpenAiChat, "h", body.as_bytes());
        assert!(
            hashed.messages[0].content.starts_with("[sha256:") && !hashed.messages[0].content.contains("xxx")
        );
        let none = rec(Record::None).request(Api::OpenAiChat, "h", body.as_bytes());
        assert_eq!(none.messages[0].content, "");
        assert_eq!(Api::of("/v1/messages?beta=true"), Some(Api::AnthropicMessages));
        assert_eq!(Api::of("/v1/messages/count_tokens"), None);
        assert_eq!(Api::of("/v1/chat/completions"), Some(Api::OpenAiChat));
    }
}
