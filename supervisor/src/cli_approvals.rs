//! `cordon grant|grants|revoke`, `cordon pending|approve|deny` and the in-sandbox client
//! `cordon-request` (docs/approvals.md, docs/grants.md).

use anyhow::{bail, Context as _, Result};
use cordon::session::control;
use cordon::session::grants::Piece;
use cordon::session::requests;

fn millis(what: &str, d: &str) -> Result<u64> {
    cordon::profile::units::parse_millis(d).map_err(|e| anyhow::anyhow!("{what} {d:?}: {e}"))
}

/// The piece of the envelope a grant or a request names: exactly one of these.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
pub struct PieceArgs {
    /// A path of the read envelope (as the envelope lists it, variables expanded).
    #[arg(long)]
    read: Option<String>,
    /// A path of the write envelope.
    #[arg(long)]
    write: Option<String>,
    /// A name of the net envelope (NAME[:PORT]; a proxy sandbox).
    #[arg(long)]
    net: Option<String>,
    /// A credential of the secrets envelope (its variable), put in its host's requests.
    #[arg(long)]
    secret: Option<String>,
}

impl From<PieceArgs> for Piece {
    fn from(a: PieceArgs) -> Piece {
        match (a.read, a.write, a.net, a.secret) {
            (Some(r), ..) => Piece::Read(r),
            (_, Some(w), ..) => Piece::Write(w),
            (_, _, Some(n), _) => Piece::Net(n),
            // The group requires exactly one.
            (.., s) => Piece::Secret(s.unwrap_or_default()),
        }
    }
}

/// `cordon approve|deny ID [--for D | --once]`.
#[derive(clap::Args)]
pub struct AnswerArgs {
    id: String,
    /// Remember the answer this long (the same question is answered without asking; a grant
    /// or connection approved lasts as long). Default: this once.
    #[arg(long = "for", conflicts_with = "once")]
    lasts: Option<String>,
    /// This once (the default).
    #[arg(long)]
    once: bool,
    /// The person the answer is given for (recorded with it).
    #[arg(long, default_value = "")]
    on_behalf_of: String,
}

pub struct GrantArgs {
    pub sandbox: String,
    pub piece: Piece,
    pub lasts: String,
    pub reason: String,
    pub on_behalf_of: String,
}

pub fn grant(a: GrantArgs) -> Result<i32> {
    let for_ms = millis("--for", &a.lasts)?;
    let id = control::resolve(&a.sandbox)?;
    let done = control::grant(&id, &a.piece, for_ms, &a.reason, &a.on_behalf_of)?;
    println!("sandbox {id}: {done}");
    Ok(0)
}

pub fn grants(sandbox: &str) -> Result<i32> {
    let id = control::resolve(sandbox)?;
    // Reasons may be the agent's words (a request's `--why`): escaped.
    for line in control::grants(&id)?.lines() {
        println!("{}", cordon::text::escape(line));
    }
    Ok(0)
}

pub fn revoke(sandbox: &str, grant: u64) -> Result<i32> {
    let id = control::resolve(sandbox)?;
    println!("sandbox {id}: {}", control::revoke(&id, grant)?);
    Ok(0)
}

/// `cordon pending [SANDBOX]`: every waiting question, one line each.
pub fn pending(sandbox: Option<&str>) -> Result<i32> {
    let ids: Vec<String> = match sandbox {
        Some(s) => vec![control::resolve(s)?],
        None => control::list().into_iter().map(|r| r.meta.sandbox).collect(),
    };
    let mut any = false;
    for id in ids {
        match control::pending(&id) {
            Ok(lines) if lines.is_empty() => {}
            Ok(lines) => {
                any = true;
                // The lines quote the agent's reasons and paths: escaped.
                for l in lines.lines() {
                    println!("{}", cordon::text::escape(l));
                }
            }
            // Another user's sandbox, or one ending: say so and go on.
            Err(e) if sandbox.is_none() => cordon::text::eprint(&format!("{e}")),
            Err(e) => return Err(e.into()),
        }
    }
    if !any {
        println!("nothing is waiting for an answer");
    }
    Ok(0)
}

/// `SANDBOX/N`, or `N` when exactly one running sandbox has a request N waiting.
fn request_id(given: &str) -> Result<(String, u64)> {
    let parse = |n: &str| {
        n.trim_start_matches('#')
            .parse::<u64>()
            .with_context(|| format!("{given:?}: a request is SANDBOX/N or N (`cordon pending` lists them)"))
    };
    if let Some((sb, n)) = given.split_once('/') {
        return Ok((control::resolve(sb)?, parse(n)?));
    }
    let n = parse(given)?;
    let waiting: Vec<String> = control::list()
        .into_iter()
        .map(|r| r.meta.sandbox)
        .filter(|id| {
            control::pending(id).is_ok_and(|l| l.lines().any(|l| l.starts_with(&format!("{id}/{n} "))))
        })
        .collect();
    match waiting.as_slice() {
        [one] => Ok((one.clone(), n)),
        [] => bail!("no running sandbox has request {n} waiting (`cordon pending` lists them)"),
        many => bail!(
            "request {n} is waiting in {} sandboxes ({}): say which, as SANDBOX/{n}",
            many.len(),
            many.join(", ")
        ),
    }
}

/// `cordon approve|deny ID [--for D | --once]`.
pub fn answer(a: &AnswerArgs, approve: bool) -> Result<i32> {
    let for_ms = a
        .lasts
        .as_deref()
        .map(|d| millis("--for", d))
        .transpose()?
        .unwrap_or(0);
    let (id, n) = request_id(&a.id)?;
    let done = control::answer_request(&id, n, approve, for_ms, &a.on_behalf_of)?;
    println!("sandbox {id}: {}", cordon::text::escape(&done));
    Ok(0)
}

/// The client inside the sandbox: ask, wait for the answer (exit 0 granted, 1 refused,
/// 2 when there is nobody to ask).
pub fn request(piece: Piece, lasts: Option<&str>, why: &str) -> Result<i32> {
    let for_ms = lasts.map(|d| millis("--for", d)).transpose()?.unwrap_or(0);
    let socket = std::path::Path::new(requests::INSIDE_DIR).join(requests::SOCKET_NAME);
    let req = requests::Request {
        what: piece.what().into(),
        target: piece.target().into(),
        for_ms,
        why: why.into(),
    };
    let reply = match requests::ask(&socket, &req) {
        Ok(r) => r,
        Err(e) => {
            cordon::text::eprint(&format!(
                "request: cannot ask ({}: {e}); this sandbox's profile does not take requests (approvals.requests)",
                socket.display()
            ));
            return Ok(2);
        }
    };
    if reply.granted {
        println!("{}", cordon::text::escape(&reply.detail));
        Ok(0)
    } else {
        cordon::text::eprint(&format!("request refused: {}", reply.detail));
        Ok(1)
    }
}

/// Called as `cordon-request` (the client bound into the sandbox): the arguments are those
/// of `cordon request`.
pub fn argv() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called = args
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n == requests::CLIENT_NAME)
        })
        .unwrap_or(false);
    if called {
        args[0] = "cordon".into();
        args.insert(1, "request".into());
    }
    args
}
