//! The rules a recorded syscall can break: reads and writes of watched paths, executions
//! outside the allowed places, denials, and the rest of what one syscall says.

use super::paths::{is_own_exe, open_intent, routinely_probed};
use super::*;

impl Detector {
    /// Does `path` match `set`? The matching pattern and the path as resolved.
    pub(super) fn path_hit(
        cwds: &mut cwd::Cwds,
        set: &glob::Set,
        e: &pb::Event,
        dirfd: i64,
        path: &str,
    ) -> Option<(String, String)> {
        if path.is_empty() {
            return None;
        }
        set_hit(set, cwds.absolute(e, dirfd, path).as_deref(), path)
    }

    pub(super) fn syscall(&mut self, e: &pb::Event, s: &pb::Syscall, found: &mut Vec<Finding>) {
        let t = e.time_unix_ns;
        let failed_enoent = s.completed && s.errno == "ENOENT";
        // The directory argument each path is resolved against: `which` 0 is `path`, 1 is
        // `path2` (renameat/renameat2/linkat: args 0 and 2; symlinkat: arg 1 for the link).
        let dirfd = |which: usize| {
            use kernel::{EXECVEAT, FCHMODAT, FCHMODAT2, FCHOWNAT, LINKAT, MKDIRAT, MKNODAT};
            use kernel::{OPENAT, OPENAT2, RENAMEAT, RENAMEAT2, SYMLINKAT, UNLINKAT};
            let arg = match (s.nr, which) {
                (OPENAT | OPENAT2 | UNLINKAT | EXECVEAT | MKDIRAT | MKNODAT, 0) => Some(0),
                (FCHOWNAT | FCHMODAT | FCHMODAT2 | RENAMEAT | RENAMEAT2 | LINKAT, 0) => Some(0),
                (RENAMEAT | RENAMEAT2 | LINKAT, 1) => Some(2),
                (SYMLINKAT, 1) => Some(1),
                _ => None,
            };
            // A dirfd is an int: AT_FDCWD arrives as its 32-bit pattern.
            #[allow(clippy::cast_possible_truncation)]
            arg.and_then(|i| s.args.get(i))
                .map_or(i64::from(libc::AT_FDCWD), |&a| i64::from(a as i32))
        };
        let flags = match s.nr {
            kernel::OPEN => s.args.get(1).copied(),
            kernel::OPENAT => s.args.get(2).copied(),
            _ => None,
        };
        let listing = flags.is_some_and(is_directory) && !failed_enoent;
        let (reads, writes) = match s.nr {
            kernel::OPEN | kernel::OPENAT => open_intent(flags.unwrap_or(0)),
            // openat2's flags are behind a pointer the probes do not read: both.
            kernel::OPENAT2 => (true, true),
            n => (
                kernel::LINKS.contains(&n) || kernel::RENAMES.contains(&n),
                kernel::CHANGE_PATH.contains(&n)
                    || kernel::RENAMES.contains(&n)
                    || kernel::CREATE_SECOND.contains(&n),
            ),
        };
        // The first path resolved once for the rules that read it (the hot path: every open).
        let abs0 = if (listing || reads) && !s.path.is_empty() {
            self.cwds.absolute(e, dirfd(0), &s.path)
        } else {
            None
        };
        if listing {
            self.listed(e, abs0.as_deref(), &s.path, found);
        }
        if reads && !failed_enoent {
            self.secret_read(e, abs0.as_deref(), &s.path, found);
        }
        if reads {
            if let Some((rule, set)) = &self.read {
                if let Some((pat, abs)) = set_hit(set, abs0.as_deref(), &s.path) {
                    // Tools look for ~/.netrc on every request (git, curl, python
                    // requests, pip): a lookup of one that exists nowhere reads nothing. One
                    // the host has but the sandbox hides is still an attempt, and every other
                    // credential file counts even when missing (a sweep is the signal).
                    let nothing_there =
                        s.errno == "ENOENT" && routinely_probed(&abs) && !(self.on_host)(&abs);
                    if !nothing_there {
                        let summary = format!("{} of {abs} ({}; pattern {pat})", s.name, result(s));
                        found.push(self.instant(rule, e, summary).about(pat));
                    }
                }
            }
        }
        if writes {
            for (which, p) in [(0, &s.path), (1, &s.path2)] {
                if p.is_empty() {
                    continue;
                }
                let Some(abs) = self.cwds.absolute(e, dirfd(which), p) else {
                    continue;
                };
                if self.watched.is_some_and(|w| w(&abs)) {
                    if let Some(t) = self.touched.iter_mut().find(|(f, _)| *f == abs) {
                        t.1 = e.seq;
                    } else if self.touched.len() < MAX_THROTTLE_KEYS {
                        self.touched.push((abs.clone(), e.seq));
                    }
                }
                if let Some(dir) = gitdir_of(&abs) {
                    if !self.git_touches.contains(&dir) {
                        self.git_touches.push(dir);
                    }
                }
            }
            if let Some((rule, set)) = &self.write {
                let second = kernel::RENAMES.contains(&s.nr) || kernel::CREATE_SECOND.contains(&s.nr);
                let firsts = kernel::CHANGE_PATH.contains(&s.nr)
                    || kernel::RENAMES.contains(&s.nr)
                    || matches!(s.nr, kernel::OPEN | kernel::OPENAT | kernel::OPENAT2);
                let candidates = [(firsts, &s.path, 0), (second, &s.path2, 1)];
                let hit = candidates
                    .iter()
                    .filter(|(on, p, _)| *on && !p.is_empty())
                    .find_map(|(_, p, which)| Self::path_hit(&mut self.cwds, set, e, dirfd(*which), p))
                    // A directory arriving at a protected name (renamed or linked there)
                    // writes everything beneath it.
                    .or_else(|| {
                        (second && !s.path2.is_empty())
                            .then(|| self.cwds.absolute(e, dirfd(1), &s.path2))
                            .flatten()
                            .and_then(|abs| {
                                set.matches_beneath(&abs).map(|p| (format!("{p} (beneath)"), abs))
                            })
                    });
                if let Some((pat, abs)) = hit {
                    let summary = format!("{} of {abs} ({}; pattern {pat})", s.name, result(s));
                    found.push(self.instant(rule, e, summary).about(pat));
                }
            }
        }
        // Rewritten: opened with O_TRUNC, or replaced by a rename onto it.
        if s.completed && s.ret >= 0 {
            #[allow(clippy::cast_possible_truncation)]
            let trunc = flags.is_some_and(|f| (f as i32) & libc::O_TRUNC != 0);
            if trunc {
                self.rewritten_one(e, dirfd(0), &s.path, found);
            } else if kernel::RENAMES.contains(&s.nr) && !s.path2.is_empty() {
                self.rewritten_one(e, dirfd(1), &s.path2, found);
            }
        }
        if matches!(s.nr, kernel::UNLINK | kernel::UNLINKAT | kernel::RMDIR) && !failed_enoent {
            if let Some(f) = self.deletions.as_mut().and_then(|w| w.push(t, e.seq, "")) {
                found.push(f);
            }
            if s.completed && s.ret == 0 {
                self.deleted_one(e, dirfd(0), &s.path, found);
            }
        }
        if matches!(s.nr, kernel::EXECVE | kernel::EXECVEAT)
            && s.completed
            && s.ret < 0
            && !failed_enoent
            && s.errno != "ENOTDIR"
        {
            self.exec_check(e, &s.path, &format!("{} ({})", s.name, s.errno), found);
        }
        if let Some((rule, names)) = &self.syscalls {
            if names.contains(&s.name) {
                found.push(self.instant(rule, e, format!("{} ({})", s.name, result(s))));
            }
        }
        if s.denied {
            self.denied(e, &s.name, found);
        }
        if let Some(a) = s
            .addr
            .as_ref()
            .filter(|a| a.family == "inet" || a.family == "inet6")
        {
            let same = self
                .last_net
                .remove(&e.host_tid)
                .is_some_and(|(ip, port)| ip == a.ip && port == a.port);
            if !same && matches!(s.name.as_str(), "connect" | "sendto" | "sendmsg") {
                let n = pb::Network {
                    op: if s.name == "connect" {
                        "connect".into()
                    } else {
                        "sendmsg".into()
                    },
                    protocol: String::new(),
                    ip: a.ip.clone(),
                    port: a.port,
                    // Refused or failed: it did not get out (a non-blocking connect under
                    // way did).
                    allowed: s.completed && (s.ret >= 0 || s.errno == "EINPROGRESS"),
                    rule: String::new(),
                };
                // Its refusal is already counted above.
                self.egress_seen(e, &n, found);
            }
        }
    }

    pub(super) fn exec_check(&mut self, e: &pb::Event, filename: &str, what: &str, found: &mut Vec<Finding>) {
        let Some((rule, allow)) = &self.exec else { return };
        if filename.is_empty() || is_own_exe(filename) {
            return;
        }
        let abs = self.cwds.absolute(e, i64::from(libc::AT_FDCWD), filename);
        let allowed = match &abs {
            Some(a) => allow.matches(a).is_some(),
            None => false,
        };
        if !allowed {
            let shown =
                abs.unwrap_or_else(|| format!("{filename} (relative to a directory cordon could not tell)"));
            found.push(self.instant(rule, e, format!("{what} of {shown}, outside the allowed places")));
        }
    }
}

fn result(s: &pb::Syscall) -> String {
    if !s.completed {
        "no result".into()
    } else if s.ret < 0 {
        s.errno.clone()
    } else {
        "succeeded".into()
    }
}
