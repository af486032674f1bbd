//! Preset profiles, embedded so `--profile default` works from any directory.

pub const PRESETS: &[(&str, &str)] = &[
    ("default", include_str!("../../../profiles/default.toml")),
    (
        "offline-analyst",
        include_str!("../../../profiles/offline-analyst.toml"),
    ),
    ("networked", include_str!("../../../profiles/networked.toml")),
    ("agent", include_str!("../../../profiles/agent.toml")),
    ("claude", include_str!("../../../profiles/claude.toml")),
    ("codex", include_str!("../../../profiles/codex.toml")),
    ("gemini", include_str!("../../../profiles/gemini.toml")),
    (
        "python-agent",
        include_str!("../../../profiles/python-agent.toml"),
    ),
    (
        "ip-allowlist",
        include_str!("../../../profiles/ip-allowlist.toml"),
    ),
    ("mcp-server", include_str!("../../../profiles/mcp-server.toml")),
    ("mcp-package", include_str!("../../../profiles/mcp-package.toml")),
    ("strict", include_str!("../../../profiles/strict.toml")),
    ("level-0", include_str!("../../../profiles/level-0.toml")),
    ("level-1", include_str!("../../../profiles/level-1.toml")),
    ("level-2", include_str!("../../../profiles/level-2.toml")),
    ("level-3", include_str!("../../../profiles/level-3.toml")),
    ("level-4", include_str!("../../../profiles/level-4.toml")),
    ("level-5", include_str!("../../../profiles/level-5.toml")),
];

pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The preset for a known agent command, when no profile was asked for: by the program's
/// name (`claude`, `codex`, `gemini`), and for the package runners `npx` and `uvx` by the
/// package they run: an agent's own package (`npx @openai/codex`), or one named like an MCP
/// server (`npx -y @modelcontextprotocol/server-filesystem`, `uvx mcp-server-fetch`); a
/// runner starts any package, and most are neither. `python` is not picked: a script is
/// anything.
pub fn for_command<S: AsRef<str>>(argv: &[S]) -> Option<&'static str> {
    let program = argv.first()?.as_ref();
    match program.rsplit('/').next().unwrap_or(program) {
        "claude" => Some("claude"),
        "codex" => Some("codex"),
        "gemini" => Some("gemini"),
        "npx" | "uvx" => package_of(&argv[1..]).and_then(|p| match p {
            "@anthropic-ai/claude-code" => Some("claude"),
            "@openai/codex" => Some("codex"),
            "@google/gemini-cli" => Some("gemini"),
            _ => is_mcp_server(p).then_some("mcp-package"),
        }),
        _ => None,
    }
}

/// The package a runner's arguments name: the first one that is not an option (or an
/// option's value), without its version.
fn package_of<S: AsRef<str>>(args: &[S]) -> Option<&str> {
    // Runner options that take a value as the next argument (npx: -p/--package, -c/--call;
    // uvx: --from, --with, --python, -p, --index, --index-url).
    const VALUED: &[&str] = &[
        "-p",
        "--package",
        "-c",
        "--call",
        "--from",
        "--with",
        "--python",
        "--index",
        "--index-url",
    ];
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(a) = it.next() {
        if VALUED.contains(&a) {
            it.next();
        } else if !a.starts_with('-') {
            // `@scope/name@1.2.3`, `name@latest`, `name==1.0`: the version is not the name.
            let (scope, rest) = match a.strip_prefix('@') {
                Some(r) => ("@", r),
                None => ("", a),
            };
            let end = rest.find(['@', '=', '<', '>', '~', '[']).unwrap_or(rest.len());
            return Some(&a[..scope.len() + end]);
        }
    }
    None
}

/// Named like an MCP server: in the `@modelcontextprotocol` scope, or with `mcp` as one of
/// the dash-separated words of its name (`mcp-server-git`, `@playwright/mcp`, `firecrawl-mcp`).
fn is_mcp_server(package: &str) -> bool {
    let (scope, name) = match package.split_once('/') {
        Some((s, n)) if s.starts_with('@') => (s, n),
        _ => ("", package),
    };
    scope == "@modelcontextprotocol" || name.split(['-', '_', '.']).any(|w| w.eq_ignore_ascii_case("mcp"))
}

#[cfg(test)]
mod tests {
    use super::for_command;

    #[test]
    fn known_agents_get_their_preset_by_program_name() {
        assert_eq!(for_command(&["claude", "-p", "hi"]), Some("claude"));
        assert_eq!(for_command(&["/usr/local/bin/codex", "exec"]), Some("codex"));
        assert_eq!(for_command(&["gemini"]), Some("gemini"));
        assert_eq!(for_command(&["python3", "agent.py"]), None);
        assert_eq!(for_command(&["codex-helper"]), None);
        assert_eq!(for_command::<&str>(&[]), None);
        // Run through npx by their packages.
        assert_eq!(
            for_command(&["npx", "-y", "@openai/codex@0.171.0", "exec"]),
            Some("codex")
        );
        assert_eq!(for_command(&["npx", "@google/gemini-cli"]), Some("gemini"));
        assert_eq!(for_command(&["npx", "@anthropic-ai/claude-code"]), Some("claude"));
        assert_eq!(for_command(&["npx", "@openai/codex-sdk"]), None);
    }

    #[test]
    fn a_package_runner_is_picked_only_for_an_mcp_server() {
        let mcp = Some("mcp-package");
        for argv in [
            &["npx", "-y", "@modelcontextprotocol/server-filesystem", "/ws"][..],
            &["npx", "--yes", "@modelcontextprotocol/server-memory@2025.1.1"],
            &["npx", "@playwright/mcp@latest"],
            &["npx", "-y", "firecrawl-mcp"],
            &["uvx", "mcp-server-fetch"],
            &[
                "uvx",
                "--from",
                "git+https://example.test/x",
                "mcp-server-git==1.0",
            ],
            &["/usr/bin/npx", "-y", "@notionhq/notion-mcp-server"],
        ] {
            assert_eq!(for_command(argv), mcp, "{argv:?}");
        }
        for argv in [
            &["npx", "-y", "create-react-app", "my-mcp-app"][..],
            &["npx", "prettier", "--write", "."],
            &["npx", "-p", "mcp-server-x", "cowsay"],
            &["uvx", "ruff", "check"],
            &["uvx", "--from", "mcp-server-git", "black"],
            &["npx"],
            &["npx", "-y", "mcpserver"],
        ] {
            assert_eq!(for_command(argv), None, "{argv:?}");
        }
    }
}
