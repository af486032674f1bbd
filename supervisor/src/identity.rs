//! Who a run acts for: the real caller, the user behind `sudo`, and the `--on-behalf-of`
//! principal. The agent's host ids follow from it and are never 0.

use std::path::PathBuf;

/// Host uid/gid for agents started by root without `sudo`: never 0, outside the ranges
/// distributions hand to people and services, so the agent owns nothing on the host.
pub const ROOT_CALLER_AGENT_ID: u32 = 2_147_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub real_uid: u32,
    pub sudo_uid: Option<u32>,
    pub sudo_user: Option<String>,
    pub on_behalf_of: Option<String>,
    /// The invoking user: the sudo user if any, else the real caller.
    pub owner_uid: u32,
    pub owner_gid: u32,
    pub owner_name: String,
    pub home: PathBuf,
}

fn passwd(uid: u32) -> Option<(String, PathBuf, u32)> {
    let pw = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok()??;
    Some((pw.name, pw.dir, pw.gid.as_raw()))
}

impl Identity {
    pub fn detect(on_behalf_of: Option<String>) -> Identity {
        let (real_uid, real_gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let env_id = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
        // SUDO_UID is only trusted when we really are root (sudo set it; root could do anything anyway).
        let sudo_uid = env_id("SUDO_UID").filter(|_| real_uid == 0);
        let sudo_gid = env_id("SUDO_GID").filter(|_| real_uid == 0);
        let owner_uid = sudo_uid.unwrap_or(real_uid);
        let pw = passwd(owner_uid);
        let owner_gid = sudo_gid
            .or(pw.as_ref().map(|p| p.2))
            .unwrap_or(if sudo_uid.is_some() { owner_uid } else { real_gid });
        let owner_name = pw
            .as_ref()
            .map_or_else(|| format!("uid{owner_uid}"), |p| p.0.clone());
        let home = pw
            .map(|p| p.1)
            .filter(|h| h.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        Identity {
            real_uid,
            sudo_uid,
            sudo_user: std::env::var("SUDO_USER").ok().filter(|_| sudo_uid.is_some()),
            on_behalf_of,
            owner_uid,
            owner_gid,
            owner_name,
            home,
        }
    }

    /// Host ids the agent runs as: the invoking user's own when that user is not root,
    /// otherwise a dedicated unprivileged id.
    pub fn agent_ids(&self) -> (u32, u32) {
        if self.owner_uid == 0 {
            (ROOT_CALLER_AGENT_ID, ROOT_CALLER_AGENT_ID)
        } else {
            (self.owner_uid, self.owner_gid)
        }
    }

    pub fn principal(&self) -> String {
        self.on_behalf_of
            .clone()
            .unwrap_or_else(|| self.owner_name.clone())
    }

    /// The one line printed at start: who this sandbox acts for.
    pub fn line(&self) -> String {
        let (au, _) = self.agent_ids();
        let via = match (&self.sudo_uid, &self.sudo_user) {
            (Some(u), Some(n)) => format!("{n} (uid {u}) via sudo"),
            (Some(u), None) => format!("uid {u} via sudo"),
            _ => format!("{} (uid {})", self.owner_name, self.real_uid),
        };
        format!(
            "acting for {} — started by {via}; agent runs as host uid {au}",
            self.principal()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(owner: u32) -> Identity {
        Identity {
            real_uid: 0,
            sudo_uid: (owner != 0).then_some(owner),
            sudo_user: (owner != 0).then(|| "alice".into()),
            on_behalf_of: None,
            owner_uid: owner,
            owner_gid: owner,
            owner_name: if owner == 0 { "root".into() } else { "alice".into() },
            home: "/home/alice".into(),
        }
    }

    #[test]
    fn agent_is_never_host_root() {
        assert_eq!(id(0).agent_ids(), (ROOT_CALLER_AGENT_ID, ROOT_CALLER_AGENT_ID));
        assert_eq!(id(1000).agent_ids(), (1000, 1000));
    }

    #[test]
    fn line_names_principal_and_route() {
        let mut i = id(1000);
        i.on_behalf_of = Some("ticket-42@ci".into());
        let l = i.line();
        assert!(
            l.contains("acting for ticket-42@ci") && l.contains("alice (uid 1000) via sudo"),
            "{l}"
        );
    }
}
