//! What a path or an open's flags say, for the rules: the gitdir a write would change, the
//! probes a shell makes of every directory on its PATH, cordon's own executable, the program a
//! loader is asked to run, a glob set's hit, and an open's intent.

use crate::glob;

/// The gitdir a write to `path` would change, if its shape says so: `DIR/config` (and its
/// lock, `config.worktree`), `DIR/index` (and its lock: gitlinks), `DIR/hooks/NAME`. Whether
/// DIR is a gitdir is checked by whoever inspects it.
pub(super) fn gitdir_of(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    if matches!(
        name,
        "config" | "config.lock" | "config.worktree" | "index" | "index.lock"
    ) {
        return Some(dir.to_string()).filter(|d| !d.is_empty());
    }
    let (gitdir, hooks) = dir.rsplit_once('/')?;
    (hooks == "hooks" && !gitdir.is_empty()).then(|| gitdir.to_string())
}

/// Credential files ordinary tools look for on every run, whether or not any exist.
pub(super) fn routinely_probed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == ".netrc" || name == "_netrc"
}

/// `/proc/self/exe`, `/proc/thread-self/exe` or `/proc/PID/exe`: a process re-executing a
/// program that is already running, whose own exec was judged when it started (tools that
/// re-exec themselves for each subcommand do this constantly).
pub(super) fn is_own_exe(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let Some(who) = rest.strip_suffix("/exe") else {
        return false;
    };
    who == "self" || who == "thread-self" || (!who.is_empty() && who.bytes().all(|b| b.is_ascii_digit()))
}

/// The program a run of the dynamic loader (`ld-linux-x86-64.so.2 PROG`, `ld-musl-*.so.1`,
/// `ld.so`) executes: its first argument that is not a loader option.
pub(super) fn loader_target<'a>(filename: &str, argv: &'a [String]) -> Option<&'a str> {
    let base = filename.rsplit('/').next().unwrap_or(filename);
    if !(base == "ld.so" || base.starts_with("ld-") && base.contains(".so")) {
        return None;
    }
    /// Options of glibc's loader that take a value.
    const WITH_VALUE: &[&str] = &[
        "--library-path",
        "--inhibit-rpath",
        "--audit",
        "--preload",
        "--argv0",
        "--glibc-hwcaps-prepend",
        "--glibc-hwcaps-mask",
    ];
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if a == "--" {
            return args.next().map(String::as_str);
        } else if !a.starts_with("--") {
            return Some(a);
        }
    }
    None
}

/// Does `set` match `path`, resolved once for its event to `abs` (None: its directory was
/// not known)? The matching pattern and the path as resolved.
pub(super) fn set_hit(set: &glob::Set, abs: Option<&str>, path: &str) -> Option<(String, String)> {
    if path.is_empty() {
        return None;
    }
    match abs {
        Some(a) => set.matches(a).map(|p| (p.to_string(), a.to_string())),
        None => set
            .matches_relative(path)
            .map(|p| (p.to_string(), path.to_string())),
    }
}

/// (reads, writes) of an open with these flags. Opening a directory reads no secret (listing
/// one is not hunting yet, and `find` opens thousands): only files count as reads.
pub(super) fn open_intent(flags: u64) -> (bool, bool) {
    let w = write_intent(flags);
    (!w && !is_directory(flags), w)
}

/// An open of a directory (to list it, or as a base for `*at` calls).
pub(super) fn is_directory(flags: u64) -> bool {
    #[allow(clippy::cast_possible_truncation)]
    let dir = (flags as i32) & libc::O_DIRECTORY != 0;
    dir
}

pub(super) fn write_intent(flags: u64) -> bool {
    // The flags are an int: the upper half of the register is not part of them.
    #[allow(clippy::cast_possible_truncation)]
    let flags = flags as i32;
    flags & (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) != 0
}
