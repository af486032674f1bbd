//! Each sandbox process's working directory, followed through the event stream (inherited at
//! fork, changed by chdir and fchdir), so a relative path in an event can be made absolute
//! even after the process is gone. A process first seen without a known directory is looked
//! up in /proc while it lives.

use std::collections::HashMap;

use crate::events::pb::{self, event::Kind};
use crate::kernel::{CHDIR, FCHDIR};

/// How a live process's directory (or one of its directory fds) is read: (host pid, dirfd or
/// AT_FDCWD) → absolute path as the sandbox sees it.
pub type Lookup = Box<dyn Fn(u32, i64) -> Option<String> + Send>;

/// Read /proc/PID/cwd or /proc/PID/fd/N (the kernel gives the path as the sandbox sees it).
pub fn proc_lookup() -> Lookup {
    Box::new(|pid, dirfd| {
        let link = if dirfd == i64::from(libc::AT_FDCWD) {
            format!("/proc/{pid}/cwd")
        } else {
            format!("/proc/{pid}/fd/{dirfd}")
        };
        std::fs::read_link(link)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    })
}

pub struct Cwds {
    /// Host pid → working directory (fork events know the child only by its host pid).
    dirs: HashMap<u32, String>,
    lookup: Lookup,
}

impl Cwds {
    pub fn new(lookup: Lookup) -> Self {
        Self {
            dirs: HashMap::new(),
            lookup,
        }
    }

    /// Follow one event.
    pub fn observe(&mut self, e: &pb::Event) {
        match &e.kind {
            Some(Kind::Fork(f)) if !f.thread => {
                if let Some(d) = self.dir_of(e) {
                    self.dirs.insert(f.child_host_pid, d);
                }
            }
            Some(Kind::Exit(x)) if x.process => {
                self.dirs.remove(&e.host_pid);
            }
            Some(Kind::Syscall(s)) if s.completed && s.ret == 0 && s.nr == CHDIR => {
                let to = if s.path.starts_with('/') {
                    Some(s.path.clone())
                } else {
                    self.dir_of(e).map(|d| format!("{d}/{}", s.path))
                };
                match to {
                    Some(d) => self.dirs.insert(e.host_pid, d),
                    None => self.dirs.remove(&e.host_pid),
                };
            }
            Some(Kind::Syscall(s)) if s.completed && s.ret == 0 && s.nr == FCHDIR => {
                match (self.lookup)(e.host_pid, i64::from(libc::AT_FDCWD)) {
                    Some(d) => self.dirs.insert(e.host_pid, d),
                    None => self.dirs.remove(&e.host_pid),
                };
            }
            _ => {}
        }
    }

    /// The working directory of `e`'s process, if known or still readable.
    fn dir_of(&mut self, e: &pb::Event) -> Option<String> {
        if let Some(d) = self.dirs.get(&e.host_pid) {
            return Some(d.clone());
        }
        let d = (self.lookup)(e.host_pid, i64::from(libc::AT_FDCWD))?;
        self.dirs.insert(e.host_pid, d.clone());
        Some(d)
    }

    /// `path` of `e` made absolute: relative to its working directory (AT_FDCWD) or to the
    /// directory fd `dirfd` (looked up while the process lives).
    pub fn absolute(&mut self, e: &pb::Event, dirfd: i64, path: &str) -> Option<String> {
        if path.starts_with('/') {
            return Some(path.to_string());
        }
        let base = if dirfd == i64::from(libc::AT_FDCWD) {
            self.dir_of(e)?
        } else {
            (self.lookup)(e.host_pid, dirfd)?
        };
        Some(format!("{base}/{path}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pid: u32, kind: Kind) -> pb::Event {
        pb::Event {
            pid,
            host_pid: pid + 1000,
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn chdir(path: &str, ret: i64) -> Kind {
        Kind::Syscall(pb::Syscall {
            nr: CHDIR,
            path: path.into(),
            completed: true,
            ret,
            ..Default::default()
        })
    }

    #[test]
    fn follows_fork_and_chdir_after_the_process_is_gone() {
        // Only pid 1 can be looked up (it lives); everything else must be followed.
        let mut c = Cwds::new(Box::new(|host, _| (host == 1001).then(|| "/w".to_string())));
        let fork = |child| {
            Kind::Fork(pb::ProcessFork {
                child_pid: child,
                child_host_pid: child + 1000,
                thread: false,
            })
        };
        c.observe(&ev(1, fork(2)));
        c.observe(&ev(2, chdir("sub", 0)));
        c.observe(&ev(2, chdir("/nowhere", -2)));
        c.observe(&ev(2, fork(3)));
        let e3 = ev(3, chdir("x", -2));
        assert_eq!(
            c.absolute(&e3, i64::from(libc::AT_FDCWD), "./t").as_deref(),
            Some("/w/sub/./t")
        );
        assert_eq!(c.absolute(&e3, 5, "t"), None);
        assert_eq!(c.absolute(&e3, 5, "/abs").as_deref(), Some("/abs"));
        c.observe(&ev(
            3,
            Kind::Exit(pb::ProcessExit {
                process: true,
                ..Default::default()
            }),
        ));
        assert_eq!(c.absolute(&e3, i64::from(libc::AT_FDCWD), "t"), None);
    }
}
