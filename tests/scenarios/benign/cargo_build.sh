#!/bin/sh
# Build and run a small crate, offline.
set -e
mkdir -p src
printf '[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n' > Cargo.toml
printf 'fn main() { println!("{}", (1..=10).sum::<u32>()); }\n' > src/main.rs
cargo build --offline -q 2>&1
test "$(./target/debug/tiny)" = 55
echo ok
