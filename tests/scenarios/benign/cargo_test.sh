#!/bin/sh
# Unit tests of a small library crate.
set -e
mkdir -p src
printf '[package]\nname = "lib1"\nversion = "0.1.0"\nedition = "2021"\n' > Cargo.toml
cat > src/lib.rs <<'RS'
pub fn add(a: i32, b: i32) -> i32 { a + b }
#[cfg(test)]
mod tests { #[test] fn adds() { assert_eq!(super::add(2, 3), 5); } }
RS
cargo test --offline -q 2>&1 | grep -q "1 passed"
echo ok
