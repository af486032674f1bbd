//! cordon's exit statuses. They follow the shell's conventions (as `env`, `timeout` and
//! `docker run` do), so a caller tells cordon's own failure from the agent's status.

/// cordon could not build the sandbox: no agent ran.
pub const CORDON_ERROR: i32 = 125;
/// The command was found but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// The status of a process that a signal killed: 128 + its number.
pub fn signaled(signal: i32) -> i32 {
    128 + signal
}
