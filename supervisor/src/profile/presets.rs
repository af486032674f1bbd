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
    (
        "ip-allowlist",
        include_str!("../../../profiles/ip-allowlist.toml"),
    ),
    ("mcp-server", include_str!("../../../profiles/mcp-server.toml")),
    ("strict", include_str!("../../../profiles/strict.toml")),
];

pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The preset for a known agent command (`claude` → `claude`), when no profile was asked for.
pub fn for_command(program: &str) -> Option<&'static str> {
    match program.rsplit('/').next().unwrap_or(program) {
        "claude" => Some("claude"),
        _ => None,
    }
}
