//! Per-sandbox cgroups on hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified) and on
//! pure cgroup v2 hosts. Every cgroup is created beneath the cgroup cordon itself runs in and
//! removed at exit; the limits of cordon's own cgroup are never touched.

use crate::profile::Limits;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CFS_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroups: cannot read /proc/self/cgroup: {0}")]
    SelfCgroup(#[source] io::Error),
    #[error("cgroups: no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified; cordon needs it to place and kill the sandbox")]
    NoCgroup2,
    #[error("cgroups: the {controller} controller is not available beneath {parent} ({why}); it is needed for limits.{limit}")]
    Controller {
        controller: &'static str,
        parent: String,
        why: String,
        limit: &'static str,
    },
    #[error("cgroups: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Hybrid,
    Unified,
}

/// Which cgroup cordon runs in, per hierarchy, from /proc/self/cgroup.
#[derive(Debug, Default)]
struct SelfCgroups {
    v2: Option<String>,
    v1: Vec<(String, String)>,
}

fn parse_self_cgroup(text: &str) -> SelfCgroups {
    let mut out = SelfCgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            out.v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                out.v1.push((c.to_string(), path.to_string()));
            }
        }
    }
    out
}

fn is_cgroup2(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

pub fn detect_layout() -> Option<Layout> {
    if is_cgroup2(CGROUP_ROOT) {
        Some(Layout::Unified)
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        Some(Layout::Hybrid)
    } else {
        None
    }
}

/// The sandbox's cgroups. Dropping it kills what is left inside and removes the directories.
#[derive(Debug)]
pub struct Cgroup {
    pub layout: Layout,
    /// The cgroup2 directory: CLONE_INTO_CGROUP target, `cgroup.kill`, `cgroup.freeze`.
    pub v2: PathBuf,
    /// v1 leaves (hybrid only), one per controller that carries a limit.
    v1: Vec<(&'static str, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err("write", path))
}

fn pid_alive(pid: i32) -> bool {
    // Signal 0 only checks for existence; EPERM means it exists but is not ours to signal.
    matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

/// Remove leaves left by cordon processes that were killed before they could clean up.
/// Names carry the owning supervisor's pid, so a live run's cgroup is never touched.
fn remove_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("cordon-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = fs::remove_dir(e.path());
        }
    }
}

impl Cgroup {
    pub fn create(sandbox_id: &str, limits: &Limits) -> Result<Cgroup, CgroupError> {
        let layout = detect_layout().ok_or(CgroupError::NoCgroup2)?;
        let own =
            parse_self_cgroup(&fs::read_to_string("/proc/self/cgroup").map_err(CgroupError::SelfCgroup)?);
        let leaf = format!("cordon-{}-{sandbox_id}", std::process::id());
        let v2_root = match layout {
            Layout::Unified => PathBuf::from(CGROUP_ROOT),
            Layout::Hybrid => PathBuf::from("/sys/fs/cgroup/unified"),
        };
        let v2_parent = v2_root.join(own.v2.as_deref().unwrap_or("/").trim_start_matches('/'));
        remove_stale(&v2_parent);
        let mut cg = Cgroup {
            layout,
            v2: v2_parent.join(&leaf),
            v1: Vec::new(),
        };
        let wanted: Vec<(&'static str, &'static str)> = [
            (limits.memory.is_some(), "memory", "memory"),
            (limits.pids.is_some(), "pids", "pids"),
            (limits.cpu.is_some(), "cpu", "cpu"),
        ]
        .into_iter()
        .filter(|(on, _, _)| *on)
        .map(|(_, c, l)| (c, l))
        .collect();

        if layout == Layout::Unified {
            let enabled = fs::read_to_string(v2_parent.join("cgroup.subtree_control")).unwrap_or_default();
            for (controller, limit) in &wanted {
                if !enabled.split_whitespace().any(|c| c == *controller) {
                    return Err(CgroupError::Controller {
                        controller,
                        parent: v2_parent.display().to_string(),
                        why: "not enabled in its cgroup.subtree_control".into(),
                        limit,
                    });
                }
            }
        }
        fs::create_dir(&cg.v2).map_err(io_err("create", &cg.v2))?;
        if layout == Layout::Hybrid {
            for (controller, limit) in &wanted {
                let own_path = own
                    .v1
                    .iter()
                    .find(|(c, _)| c == controller)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| CgroupError::Controller {
                        controller,
                        parent: "/proc/self/cgroup".into(),
                        why: "no v1 hierarchy carries it".into(),
                        limit,
                    })?;
                let parent = Path::new(CGROUP_ROOT)
                    .join(controller)
                    .join(own_path.trim_start_matches('/'));
                remove_stale(&parent);
                let dir = parent.join(&leaf);
                fs::create_dir(&dir).map_err(io_err("create", &dir))?;
                cg.v1.push((controller, dir));
            }
        }
        cg.apply(limits)?;
        Ok(cg)
    }

    fn dir_for(&self, controller: &str) -> &Path {
        self.v1
            .iter()
            .find(|(c, _)| *c == controller)
            .map_or(self.v2.as_path(), |(_, p)| p.as_path())
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let hybrid = self.layout == Layout::Hybrid;
        if let Some(mem) = limits.memory {
            let dir = self.dir_for("memory");
            if hybrid {
                write(&dir.join("memory.limit_in_bytes"), &mem.to_string())?;
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &mem.to_string())?;
                }
            } else {
                write(&dir.join("memory.max"), &mem.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
        }
        if let Some(pids) = limits.pids {
            write(&self.dir_for("pids").join("pids.max"), &pids.to_string())?;
        }
        if let Some(cpu) = limits.cpu {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let quota = ((cpu * CFS_PERIOD_US as f64).round() as u64).max(1000);
            let dir = self.dir_for("cpu");
            if hybrid {
                write(&dir.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            } else {
                write(&dir.join("cpu.max"), &format!("{quota} {CFS_PERIOD_US}"))?;
            }
        }
        Ok(())
    }

    /// A directory fd for CLONE_INTO_CGROUP.
    pub fn v2_dir_fd(&self) -> Result<OwnedFd, CgroupError> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&self.v2)
            .map_err(io_err("open", &self.v2))?;
        Ok(f.into())
    }

    /// Hybrid hosts: the v1 leaves' `tasks` files, opened here (as host root) for the child
    /// to join by writing "0" through them. Moving *the writing thread itself* is the one
    /// cgroup v1 move that skips the global threadgroup rwsem, whose first writer waits a full
    /// RCU grace period (10–20 ms on an idle host); writing the child's pid to cgroup.procs
    /// from the parent paid that on every launch. (v2 placement is CLONE_INTO_CGROUP.)
    pub fn v1_join_fds(&self) -> Result<Vec<(PathBuf, OwnedFd)>, CgroupError> {
        use std::os::unix::fs::OpenOptionsExt;
        self.v1
            .iter()
            .map(|(_, dir)| {
                let tasks = dir.join("tasks");
                let f = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&tasks)
                    .map_err(io_err("open", &tasks))?;
                Ok((tasks, f.into()))
            })
            .collect()
    }

    /// Plain-words reports of limits the sandbox ran into.
    pub fn limit_reports(&self, limits: &Limits) -> Vec<String> {
        let mut out = Vec::new();
        let read_key = |file: PathBuf, key: &str| -> u64 {
            fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0)
        };
        if let Some(mem) = limits.memory {
            let file = match self.layout {
                Layout::Hybrid => self.dir_for("memory").join("memory.oom_control"),
                Layout::Unified => self.v2.join("memory.events"),
            };
            let kills = read_key(file, "oom_kill ");
            if kills > 0 {
                out.push(format!(
                    "the sandbox ran out of memory: its limit is {} MiB and the kernel killed {kills} process(es) to stay within it",
                    mem >> 20
                ));
            }
        }
        if let Some(pids) = limits.pids {
            let refused = read_key(self.dir_for("pids").join("pids.events"), "max ");
            if refused > 0 {
                out.push(format!(
                    "the sandbox hit its process limit of {pids}: {refused} fork/clone call(s) were refused"
                ));
            }
        }
        out
    }

    /// Kill every process left in the sandbox's cgroup.
    pub fn kill_all(&self) {
        let kill = self.v2.join("cgroup.kill");
        if kill.exists() {
            let _ = fs::write(&kill, "1");
            return;
        }
        if let Ok(procs) = fs::read_to_string(self.v2.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // A pid in our own sandbox cgroup.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    fn remove_dirs(&self) {
        for dir in self.v1.iter().map(|(_, d)| d).chain(std::iter::once(&self.v2)) {
            // Processes killed a moment ago may still be exiting: retry briefly, bounded.
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        self.remove_dirs();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_self_cgroup() {
        let s = parse_self_cgroup("8:pids:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/\n");
        assert_eq!(s.v2.as_deref(), Some("/"));
        assert!(s.v1.contains(&("memory".into(), "/process_api/abc".into())));
        assert!(s.v1.contains(&("cpuacct".into(), "/x".into())));
        assert!(s.v1.contains(&("cpu".into(), "/x".into())));
    }
}
