//! An agent that brings its own sandbox (Codex's bubblewrap, Gemini CLI's tool sandbox, Claude
//! Code's sandbox) tries to create namespaces inside cordon's, which seccomp refuses with
//! EPERM: every command it confines then fails, and the agent may still end its task "done".
//! Never silent: the first refused attempt of a run becomes one notice (a `lifecycle` event
//! with phase `notice`, a line on stderr, a note in the seal) naming the agent's own setting
//! that turns its sandbox off — cordon is the boundary.

use std::collections::HashMap;

use crate::events::pb::{self, event::Kind};

/// The namespace flags of clone/unshare (CLONE_NEWTIME, CLONE_NEWNS … CLONE_NEWNET).
const NAMESPACES: &[(u64, &str)] = &[
    (0x0000_0080, "time"),
    (0x0002_0000, "mount"),
    (0x0200_0000, "cgroup"),
    (0x0400_0000, "uts"),
    (0x0800_0000, "ipc"),
    (0x1000_0000, "user"),
    (0x2000_0000, "pid"),
    (0x4000_0000, "network"),
];

/// Processes whose programs are remembered, for naming the agent above the sandbox tool;
/// bounded.
const MAX_PROGRAMS: usize = 4096;

/// Agents with a sandbox of their own, by program name: what to change so they leave the
/// confining to cordon.
const AGENTS: &[(&str, &str, &str)] = &[
    (
        "codex",
        "Codex",
        "run it with `--sandbox danger-full-access` (or set sandbox_mode = \"danger-full-access\" in ~/.codex/config.toml)",
    ),
    (
        "gemini",
        "Gemini CLI",
        "set security.toolSandboxing to false in ~/.gemini/settings.json and leave --sandbox off",
    ),
    (
        "claude",
        "Claude Code",
        "set sandbox.enabled to false in its settings.json",
    ),
    // Browsers that agents and MCP servers drive (Playwright, Puppeteer).
    ("chrome", "Chrome", "start it with --no-sandbox"),
    ("chromium", "Chromium", "start it with --no-sandbox"),
];

#[derive(Default)]
pub struct Nested {
    /// The names each process ran under: every program it executed, and for a script the
    /// script too (`gemini` runs as `node …/gemini`: the kernel's second exec is the
    /// interpreter's).
    programs: HashMap<u32, Vec<String>>,
    said: bool,
}

impl Nested {
    /// The notice for `e`, the first time a process of the sandbox was refused a namespace.
    pub fn observe(&mut self, e: &pb::Event) -> Option<String> {
        match &e.kind {
            Some(Kind::Exec(x)) => {
                if self.programs.len() >= MAX_PROGRAMS {
                    self.programs.clear();
                }
                let names = self.programs.entry(e.pid).or_default();
                for path in std::iter::once(&x.filename).chain(x.argv.iter().take(2)) {
                    let name = path.rsplit('/').next().unwrap_or(path).to_string();
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
                None
            }
            Some(Kind::Syscall(s)) if !self.said && s.denied => {
                let kinds = namespaces(s)?;
                self.said = true;
                Some(self.notice(e, &kinds))
            }
            _ => None,
        }
    }

    fn notice(&self, e: &pb::Event, kinds: &[&str]) -> String {
        let agent = std::iter::once(&e.pid)
            .chain(e.ancestry.iter())
            .filter_map(|pid| self.programs.get(pid))
            .flatten()
            .find_map(|name| AGENTS.iter().find(|(program, _, _)| program == name));
        let (whose, fix) = match agent {
            Some((_, agent, setting)) => (format!("{agent}'s own sandbox"), format!("{agent}: {setting}")),
            None => (
                "an agent's own sandbox?".to_string(),
                "turn the agent's own sandbox off".to_string(),
            ),
        };
        format!(
            "{} (pid {}) tried to create {} namespaces ({whose}) and was refused: namespaces cannot nest inside cordon's, so what it confines fails. cordon is the sandbox here — {fix}.",
            e.comm,
            e.pid,
            kinds.join("+")
        )
    }
}

/// The namespaces a refused clone or unshare asked for; None for any other call.
fn namespaces(s: &pb::Syscall) -> Option<Vec<&'static str>> {
    if s.name != "clone" && s.name != "unshare" {
        return None;
    }
    let flags = s.args.first().copied().unwrap_or(0);
    let kinds: Vec<&str> = NAMESPACES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    (!kinds.is_empty()).then_some(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(pid: u32, filename: &str, argv: &[&str]) -> pb::Event {
        pb::Event {
            pid,
            kind: Some(Kind::Exec(pb::ProcessExec {
                filename: filename.into(),
                argv: argv.iter().map(|a| a.to_string()).collect(),
            })),
            ..Default::default()
        }
    }

    fn refused(pid: u32, ancestry: Vec<u32>, name: &str, flags: u64, denied: bool) -> pb::Event {
        pb::Event {
            pid,
            ancestry,
            comm: "bwrap".into(),
            kind: Some(Kind::Syscall(pb::Syscall {
                name: name.into(),
                args: vec![flags, 0, 0, 0, 0, 0],
                denied,
                errno: if denied { "EPERM".into() } else { String::new() },
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn a_refused_namespace_is_said_once_with_the_agents_setting() {
        let mut n = Nested::default();
        assert_eq!(n.observe(&exec(14, "/opt/x/vendor/bin/codex", &["codex"])), None);
        // The clone bwrap made under Codex 0.171: CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET|SIGCHLD.
        let e = refused(128, vec![14, 3, 1], "clone", 0x5002_0011, true);
        let said = n.observe(&e).expect("a notice");
        assert!(
            said.contains("bwrap (pid 128) tried to create mount+user+network namespaces"),
            "{said}"
        );
        assert!(
            said.contains("Codex: run it with `--sandbox danger-full-access`"),
            "{said}"
        );
        assert_eq!(n.observe(&e), None, "once per run");
    }

    #[test]
    fn a_script_agent_is_named_by_its_script_not_its_interpreter() {
        let mut n = Nested::default();
        // The kernel runs `…/.bin/gemini` (a node script) as node: two execs, one pid.
        let gemini = "/opt/x/node_modules/.bin/gemini";
        n.observe(&exec(3, gemini, &[gemini, "-p"]));
        n.observe(&exec(3, "/usr/bin/node", &["node", gemini, "-p"]));
        n.observe(&exec(28, "/usr/bin/bwrap", &["bwrap", "--args"]));
        let said = n
            .observe(&refused(28, vec![3, 1], "clone", 0x1000_0000, true))
            .expect("a notice");
        assert!(
            said.contains("(Gemini CLI's own sandbox)") && said.contains("security.toolSandboxing"),
            "{said}"
        );
    }

    #[test]
    fn only_refused_namespace_requests_count() {
        let mut n = Nested::default();
        // A plain fork (SIGCHLD) and an allowed clone are nothing to say.
        assert_eq!(n.observe(&refused(5, vec![1], "clone", 0x11, true)), None);
        assert_eq!(n.observe(&refused(5, vec![1], "clone", 0x1000_0000, false)), None);
        assert_eq!(n.observe(&refused(5, vec![1], "openat", 0x1000_0000, true)), None);
        let said = n
            .observe(&refused(5, vec![1], "unshare", 0x1000_0000, true))
            .expect("a notice");
        assert!(
            said.contains("an agent's own sandbox?") && said.contains("turn the agent's own sandbox off"),
            "{said}"
        );
    }
}
