//! cordon: launch an AI agent's command in a kernel-confined sandbox.
//!
//! Data flow: `profile` (parse, resolve) → `policy` (pure compilation) → `launch` (the ordered
//! kernel steps, parent and child) while the `session` (probes, event pipeline, monitor,
//! trace, control socket) watches the sandbox from clone to exit. `text` escapes what came from
//! the sandbox wherever it is shown to a person. See docs/architecture.md.

pub mod detect;
pub mod doctor;
pub mod events;
pub mod exit;
pub mod glob;
pub mod identity;
pub mod kernel;
pub mod keys;
pub mod launch;
#[cfg(test)]
mod layers_test;
pub mod persist;
pub mod policy;
pub mod probes;
pub mod profile;
pub mod respond;
pub mod secret;
pub mod selftest;
pub mod session;
pub mod sys;
pub mod text;
pub mod trace;
pub mod workspace;
