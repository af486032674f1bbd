//! TLS interception for the hosts a credential is for: the agent's TLS ends here (with a
//! certificate from the run's CA), cordon opens its own verified TLS to the upstream, and the
//! HTTP requests between are read one by one (HTTP/1.1 or 2 each side, bodies and streamed
//! responses passed on as they arrive): each is recorded, the credential's placeholder is
//! replaced by the secret in the header it belongs to, and a placeholder anywhere else is
//! refused.

use crate::text::Refusal;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::firewall::Firewall;
use crate::detect::{DLP_RULE, PLACEHOLDER_RULE};
use crate::events::pb::{self, event::Kind};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// The agent's side of the connection: the bytes already read to find the server name are
/// read again first; bytes each way are counted.
struct Replay {
    first: Bytes,
    inner: TcpStream,
    up: Arc<AtomicU64>,
    down: Arc<AtomicU64>,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let chunk = self.first.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.up.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.down.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why an intercepted connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("the agent's TLS handshake with cordon failed: {0} (a client that pins certificates or ignores the system trust store fails here)")]
    AgentTls(#[source] std::io::Error),
    #[error("upstream TLS: {0}")]
    UpstreamTls(#[source] std::io::Error),
    #[error("upstream HTTP: {0}")]
    UpstreamHttp(#[source] hyper::Error),
    #[error("{0:?} is not a name TLS can verify")]
    Name(String),
    #[error("no TLS interception is set up for this run")]
    NotIntercepting,
}

/// The upstream's HTTP connection (HTTP/1.1 carries one request at a time).
#[derive(Clone)]
enum Upstream {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Body>>>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

/// The most of a model API request body cordon reads before relaying it.
const MODEL_REQUEST_MAX: usize = 32 << 20;
/// Other request bodies up to this size are read whole before they are relayed.
const WHOLE_BODY_MAX: u64 = 1 << 20;
/// The most of a model API response the gateway keeps to parse (the agent gets all of it).
const MODEL_RESPONSE_MAX: usize = 8 << 20;

/// What a `Tee` does with its copy when the body ends: (bytes, whether the body was whole).
type Finish = Box<dyn FnOnce(Vec<u8>, bool) + Send + Sync>;

/// A response body passed on frame by frame as it arrives, a copy of its first bytes kept;
/// when it ends (or is dropped: the agent went away) the copy goes to `done`.
struct Tee {
    inner: Incoming,
    copy: Vec<u8>,
    complete: bool,
    done: Option<Finish>,
}

impl Tee {
    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(std::mem::take(&mut self.copy), self.complete);
        }
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let room = MODEL_RESPONSE_MAX.saturating_sub(this.copy.len());
                    this.copy.extend_from_slice(&d[..d.len().min(room)]);
                }
                if this.inner.is_end_stream() {
                    this.complete = true;
                    this.finish();
                }
            }
            Poll::Ready(None) => {
                this.complete = true;
                this.finish();
            }
            _ => {}
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What one connection's requests need.
struct Ctx {
    fw: Arc<Firewall>,
    name: String,
    upstream: Upstream,
    events: mpsc::Sender<Kind>,
}

/// Serve one intercepted connection until either side ends it. Returns how it ended.
pub async fn serve(
    fw: Arc<Firewall>,
    agent: TcpStream,
    first: Vec<u8>,
    up: TcpStream,
    name: &str,
    events: mpsc::Sender<Kind>,
    counts: (Arc<AtomicU64>, Arc<AtomicU64>),
) -> Result<String, InterceptError> {
    let agent = Replay {
        first: Bytes::from(first),
        inner: agent,
        up: counts.0,
        down: counts.1,
    };
    let Some(tls) = &fw.tls else {
        return Err(InterceptError::NotIntercepting);
    };
    let agent_tls = tokio_rustls::TlsAcceptor::from(tls.server.clone())
        .accept(agent)
        .await
        .map_err(InterceptError::AgentTls)?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|_| InterceptError::Name(name.into()))?;
    let upstream = tls
        .upstream
        .get()
        .map_err(|e| InterceptError::UpstreamTls(std::io::Error::other(e)))?;
    let up_tls = tokio_rustls::TlsConnector::from(upstream)
        .connect(server_name, up)
        .await
        .map_err(InterceptError::UpstreamTls)?;
    let upstream = if up_tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(up_tls))
            .await
            .map_err(InterceptError::UpstreamHttp)?;
        tokio::spawn(conn);
        Upstream::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up_tls))
            .await
            .map_err(InterceptError::UpstreamHttp)?;
        tokio::spawn(conn);
        Upstream::H1(Arc::new(tokio::sync::Mutex::new(send)))
    };
    let ctx = Arc::new(Ctx {
        fw,
        name: name.into(),
        upstream,
        events,
    });
    let service = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, std::convert::Infallible>(request(&ctx, req).await) }
    });
    match hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(agent_tls), service)
        .await
    {
        Ok(()) => Ok("closed (TLS intercepted)".into()),
        Err(e) => Ok(format!("ended (TLS intercepted): {e}")),
    }
}

fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// One request of the agent: checked, its credential put in, relayed, recorded (a model API
/// request whole, with the model's answer).
async fn request(ctx: &Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), ToString::to_string);
    let mut record = pb::HttpRequest {
        method: req.method().to_string(),
        host: ctx.name.clone(),
        path: path.clone(),
        status: 0,
    };
    // Every request of the connection must be for the name the agent resolved: a Host or an
    // authority naming another site (domain fronting behind a shared CDN) would carry the
    // credential cordon adds to that site.
    if let Some(other) = other_host(&req, &ctx.name) {
        let why = format!(
            "a request on the connection to {} names {other:?}; refused",
            ctx.name
        );
        record.status = u32::from(StatusCode::MISDIRECTED_REQUEST.as_u16());
        let _ = ctx.events.send(Kind::Http(record)).await;
        let _ = ctx.events.send(refusal(&ctx.name, "host", &why)).await;
        return answer(StatusCode::MISDIRECTED_REQUEST, format!("cordon: {why}\n"));
    }
    let api = super::gateway::Api::of(&path);
    let (parts, body) = req.into_parts();
    // A model API request, or any body of a known small size, is read whole: recorded (a
    // model request), and searched before any of it leaves, so a refusal is a clean 403.
    // Bigger or open-ended bodies are searched frame by frame as they are relayed.
    let small = hyper::body::Body::size_hint(&body)
        .upper()
        .is_some_and(|n| n <= WHOLE_BODY_MAX);
    let (mut req, model_body) = match api.is_some() || small {
        true => match http_body_util::Limited::new(body, MODEL_REQUEST_MAX)
            .collect()
            .await
        {
            Ok(b) => {
                let b = b.to_bytes();
                let full = Full::new(b.clone()).map_err(|never| match never {}).boxed();
                (Request::from_parts(parts, full), Some(b))
            }
            Err(e) => {
                return answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("cordon: a model API request body cordon could not read whole: {e}\n"),
                );
            }
        },
        false => (
            Request::from_parts(parts, body.map_err(BoxError::from).boxed()),
            None,
        ),
    };
    let checked = search(ctx, &req)
        .map_err(|why| (DLP_RULE, why))
        .and_then(|()| credentials(ctx, &mut req))
        .and_then(|()| match &model_body {
            Some(b) => body_search(ctx, b).map_err(|why| (DLP_RULE, why)),
            None => Ok(()),
        });
    // Other bodies are searched frame by frame as they are relayed.
    let mut req = match model_body {
        Some(_) => req,
        None => {
            let ctx2 = ctx.clone();
            req.map(move |inner| {
                Searched {
                    inner,
                    tail: Vec::new(),
                    ctx: ctx2,
                }
                .boxed()
            })
        }
    };
    if let (Some(api), Some(b)) = (api, &model_body) {
        // (model_body holds any body read whole; only a model API's is recorded.)
        let ev = ctx.fw.recorder.request(api, &ctx.name, b);
        let _ = ctx.events.send(Kind::ModelRequest(ev)).await;
    }
    if let Err((rule, why)) = checked {
        record.status = u32::from(StatusCode::FORBIDDEN.as_u16());
        let _ = ctx.events.send(Kind::Http(record)).await;
        let _ = ctx.events.send(refusal(&ctx.name, rule, &why.0)).await;
        return answer(StatusCode::FORBIDDEN, format!("cordon: {why}\n"));
    }
    let sent = match &ctx.upstream {
        Upstream::H2(send) => {
            *req.version_mut() = Version::HTTP_2;
            if let Ok(uri) = Uri::builder()
                .scheme("https")
                .authority(ctx.name.as_str())
                .path_and_query(path.as_str())
                .build()
            {
                *req.uri_mut() = uri;
            }
            req.headers_mut().remove(HOST);
            send.clone().send_request(req).await
        }
        Upstream::H1(send) => {
            *req.version_mut() = Version::HTTP_11;
            if let Ok(uri) = path.parse::<Uri>() {
                *req.uri_mut() = uri;
            }
            if !req.headers().contains_key(HOST) {
                if let Ok(h) = HeaderValue::from_str(&ctx.name) {
                    req.headers_mut().insert(HOST, h);
                }
            }
            let mut send = send.lock().await;
            match send.ready().await {
                Ok(()) => send.send_request(req).await,
                Err(e) => Err(e),
            }
        }
    };
    match sent {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            // A service that echoes the key (an error message quoting it) must not hand the
            // agent what it never had: each secret becomes its placeholder again.
            unecho_headers(&ctx.fw, resp.headers_mut());
            if !ctx.fw.credentials.is_empty() {
                // The body may change length (a secret turned back into its placeholder).
                resp.headers_mut().remove(hyper::header::CONTENT_LENGTH);
            }
            record.status = u32::from(status);
            let _ = ctx.events.send(Kind::Http(record)).await;
            match api {
                Some(api) => {
                    let ctx = ctx.clone();
                    resp.map(move |inner| {
                        Tee {
                            inner,
                            copy: Vec::new(),
                            complete: false,
                            done: Some(Box::new(move |copy, complete| {
                                let ev = ctx.fw.recorder.response(api, &ctx.name, status, &copy, complete);
                                send_now(&ctx.events, Kind::ModelResponse(ev));
                            })),
                        }
                        .map_err(BoxError::from)
                        .boxed()
                    })
                }
                None => resp.map(|b| b.map_err(BoxError::from).boxed()),
            }
            .map(|b| {
                if ctx.fw.credentials.is_empty() {
                    b
                } else {
                    Unecho {
                        inner: b,
                        fw: ctx.fw.clone(),
                    }
                    .boxed()
                }
            })
        }
        Err(e) => {
            let _ = ctx.events.send(Kind::Http(record)).await;
            answer(
                StatusCode::BAD_GATEWAY,
                format!("cordon: upstream {}: {e}\n", ctx.name),
            )
        }
    }
}

/// The host a request names (its Host header, or its URI's authority) when that is not the
/// connection's `name`.
fn other_host<B>(req: &Request<B>, name: &str) -> Option<String> {
    let named = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .into_iter()
        .chain(req.uri().authority().map(|a| a.as_str().to_string()));
    named
        .map(|h| super::sniff::host_only(&h).trim_end_matches('.').to_string())
        .find(|h| !h.eq_ignore_ascii_case(name))
}

/// Each credential's secret in `text` replaced by its placeholder.
fn unecho(fw: &Firewall, text: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for c in &fw.credentials {
        let secret = c.secret.expose().as_bytes();
        let cur = out.as_deref().unwrap_or(text);
        if cur.windows(secret.len()).any(|w| w == secret) {
            let mut next = Vec::with_capacity(cur.len());
            let mut i = 0;
            while i < cur.len() {
                if cur[i..].starts_with(secret) {
                    next.extend_from_slice(c.placeholder.as_bytes());
                    i += secret.len();
                } else {
                    next.push(cur[i]);
                    i += 1;
                }
            }
            out = Some(next);
        }
    }
    out
}

fn unecho_headers(fw: &Firewall, headers: &mut hyper::HeaderMap) {
    for v in headers.values_mut() {
        if let Some(clean) = unecho(fw, v.as_bytes()).and_then(|b| HeaderValue::from_bytes(&b).ok()) {
            *v = clean;
        }
    }
}

/// A response body with every secret the proxy added turned back into its placeholder,
/// frame by frame (a secret split across two frames is not caught).
struct Unecho {
    inner: Body,
    fw: Arc<Firewall>,
}

impl hyper::body::Body for Unecho {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(d) => hyper::body::Frame::data(match unecho(&this.fw, &d) {
                        Some(clean) => Bytes::from(clean),
                        None => d,
                    }),
                    Err(other) => other,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        // The length changes when a secret is replaced.
        hyper::body::SizeHint::default()
    }
}

/// The event of a request refused for what it carried.
fn refusal(name: &str, rule: &str, why: &str) -> Kind {
    Kind::Connection(pb::Connection {
        name: name.into(),
        allowed: false,
        rule: rule.into(),
        reason: why.into(),
        ..Default::default()
    })
}

/// DLP over a request's URL and headers (before any credential is put in).
fn search(ctx: &Ctx, req: &Request<Body>) -> Result<(), Refusal> {
    let found = |what: &str, f: super::dlp::Finding| {
        format!("{} in the {what} of a request to {}; refused", f.what, ctx.name)
    };
    if let Some(f) = ctx.fw.dlp.scan(req.uri().to_string().as_bytes(), &ctx.name) {
        return Err(found("URL", f).into());
    }
    for (h, v) in req.headers() {
        if let Some(f) = ctx.fw.dlp.scan(v.as_bytes(), &ctx.name) {
            return Err(found(&format!("{h} header"), f).into());
        }
    }
    Ok(())
}

/// DLP and placeholders over a body read whole.
fn body_search(ctx: &Ctx, body: &[u8]) -> Result<(), Refusal> {
    if let Some(c) = ctx.fw.placeholder_in(&String::from_utf8_lossy(body)) {
        return Err(Refusal::from(format!(
            "the placeholder of {} is in the body of a request to {}; refused",
            c.rule.env, ctx.name
        )));
    }
    match ctx.fw.dlp.scan(body, &ctx.name) {
        Some(f) => Err(Refusal::from(format!(
            "{} in the body of a request to {}; refused",
            f.what, ctx.name
        ))),
        None => Ok(()),
    }
}

/// Bytes of one frame kept to search together with the next (a secret split across frames).
const OVERLAP: usize = 256;

/// A request body relayed frame by frame, each searched (with the end of the one before)
/// before it goes on; a finding ends the request with an error instead of the frame.
struct Searched {
    inner: Body,
    tail: Vec<u8>,
    ctx: Arc<Ctx>,
}

impl hyper::body::Body for Searched {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(d) = frame.data_ref() {
                let mut window = std::mem::take(&mut this.tail);
                window.extend_from_slice(d);
                let found = this
                    .ctx
                    .fw
                    .placeholder_in(&String::from_utf8_lossy(&window))
                    .map(|c| {
                        (
                            PLACEHOLDER_RULE,
                            format!(
                                "the placeholder of {} is in the body of a request to {}; refused",
                                c.rule.env, this.ctx.name
                            ),
                        )
                    })
                    .or_else(|| {
                        this.ctx.fw.dlp.scan(&window, &this.ctx.name).map(|f| {
                            (
                                DLP_RULE,
                                format!(
                                    "{} in the body of a request to {}; refused",
                                    f.what, this.ctx.name
                                ),
                            )
                        })
                    });
                if let Some((rule, why)) = found {
                    send_now(&this.ctx.events, refusal(&this.ctx.name, rule, &why));
                    // An error aborts the upstream request: the frame that holds it never
                    // leaves.
                    return Poll::Ready(Some(Err(Box::new(Refusal(why)))));
                }
                let keep = window.len().min(OVERLAP);
                this.tail = window[window.len() - keep..].to_vec();
            }
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Send an event from where nothing can wait (a body's end): at once if the queue has room,
/// else from a task of its own.
fn send_now(events: &mpsc::Sender<Kind>, kind: Kind) {
    if let Err(mpsc::error::TrySendError::Full(kind)) = events.try_send(kind) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let events = events.clone();
            rt.spawn(async move { events.send(kind).await });
        }
    }
}

/// Put each credential for this host in place of its placeholder, in its header; refuse a
/// placeholder anywhere else (another host, another header, the URL). The error names the
/// credential by its variable, never by a value.
/// The rule of a request refused because its credential is not granted now (not an
/// exfiltration: the placeholder went where its secret goes).
const SECRET_NOT_GRANTED: &str = "secret not granted";

fn credentials(ctx: &Ctx, req: &mut Request<Body>) -> Result<(), (&'static str, Refusal)> {
    let placeholder = |why: String| (PLACEHOLDER_RULE, Refusal::from(why));
    if let Some(c) = ctx.fw.placeholder_in(&req.uri().to_string()) {
        return Err(placeholder(format!(
            "the placeholder of {} is in the URL of a request to {}; refused",
            c.rule.env, ctx.name
        )));
    }
    let mut replace = Vec::new();
    for (header, value) in req.headers() {
        let Ok(text) = value.to_str() else { continue };
        let Some(c) = ctx.fw.placeholder_in(text) else {
            continue;
        };
        let here = c.rule.host == ctx.name && c.rule.header.as_deref().is_none_or(|h| h == header.as_str());
        if !here {
            return Err(placeholder(format!(
                "the placeholder of {} (for {}) was sent to {} in {}; refused",
                c.rule.env, c.rule.host, ctx.name, header
            )));
        }
        if !ctx.fw.gate.allows(&c.rule.env) {
            return Err((
                SECRET_NOT_GRANTED,
                Refusal::from(format!(
                    "the credential {} for {} is in the [grants] secrets envelope and not granted now (`cordon grant SANDBOX --secret {}`)",
                    c.rule.env, c.rule.host, c.rule.env
                )),
            ));
        }
        let real = text.replace(&c.placeholder, c.secret.expose());
        let mut v = HeaderValue::from_str(&real).map_err(|_| {
            placeholder(format!(
                "the secret of {} is not a valid header value",
                c.rule.env
            ))
        })?;
        v.set_sensitive(true);
        replace.push((header.clone(), v));
    }
    for (h, v) in replace {
        req.headers_mut().insert(h, v);
    }
    Ok(())
}
