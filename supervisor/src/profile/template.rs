//! Path templates, the profile language's paths: absolute (`/etc`) or starting with a
//! variable (`{workspace}/src`, `{home}/.ssh`). A profile is checked without a run
//! (`check`); `policy::compile` expands the variables for one run (`expand`).

use std::path::{Component, Path, PathBuf};

/// A path template (`{workspace}/src`, `/etc`) that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("unclosed `{{` in path")]
    Unclosed,
    #[error("unknown variable {{{0}}} (known: {{workspace}}, {{home}})")]
    UnknownVariable(String),
    #[error("must be an absolute path or start with {{workspace}} or {{home}}")]
    NotAbsolute,
    #[error("must not contain `..`")]
    ParentDir,
}

/// Check a path template without a context: absolute, known variables only.
pub fn check(p: &str) -> Result<(), PathError> {
    let expanded = expand(p, Path::new("/w"), Path::new("/h"))?;
    if !expanded.is_absolute() {
        return Err(PathError::NotAbsolute);
    }
    if expanded.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(PathError::ParentDir);
    }
    Ok(())
}

/// The template with `{workspace}` and `{home}` replaced, lexically normalised.
pub fn expand(p: &str, workspace: &Path, home: &Path) -> Result<PathBuf, PathError> {
    substitute(p, workspace, home).map(|s| normalize(Path::new(&s)))
}

/// The text with `{workspace}` and `{home}` replaced and nothing else changed: for values
/// that are not paths (`[environment] set`: URLs, flags).
pub fn substitute(p: &str, workspace: &Path, home: &Path) -> Result<String, PathError> {
    let mut out = String::new();
    let mut rest = p;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or(PathError::Unclosed)?;
        let var = &rest[start + 1..start + end];
        match var {
            "workspace" => out.push_str(&workspace.to_string_lossy()),
            "home" => out.push_str(&home.to_string_lossy()),
            other => return Err(PathError::UnknownVariable(other.into())),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Lexical normalisation: drop `.` and trailing slashes, keep it absolute.
fn normalize(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check("{workspace}/x").is_ok());
        assert!(check("rel").is_err());
        assert_eq!(check("/a/../b"), Err(PathError::ParentDir));
        assert_eq!(check("{nope}"), Err(PathError::UnknownVariable("nope".into())));
        assert_eq!(
            expand("{home}/.ssh/", Path::new("/w"), Path::new("/h")).unwrap(),
            PathBuf::from("/h/.ssh")
        );
    }
}
