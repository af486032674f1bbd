//! The egress proxy of a `network.mode = "proxy"` sandbox (docs/network.md).

pub mod dns;
pub mod rules;
pub mod sniff;
