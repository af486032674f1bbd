//! Builds the eBPF programs (ebpf/cordon-probes) for the BPF target with aya-build, the event,
//! trace and control schemas (proto/) with prost-build, and their JSON mapping with pbjson-build. All
//! land in OUT_DIR and are embedded in cordon.

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let probes = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "cordon-probes")
        .ok_or_else(|| anyhow!("the cordon-probes package is missing from the workspace"))?;
    let root = probes
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("cordon-probes has no directory"))?;
    // The eBPF crate needs `-Z build-std=core`; RUSTC_BOOTSTRAP is set for that child build
    // only (this process and its children), so cordon itself stays on stable rules.
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "1.98.0".into());
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "cordon-probes",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;
    // SAFETY: as above.
    unsafe { std::env::remove_var("RUSTC_BOOTSTRAP") };

    // aya-build watches the probe crate; the record layouts and syscall table it shares with
    // the supervisor live in cordon-probe-common.
    println!("cargo::rerun-if-changed=../ebpf/cordon-probe-common/src");
    println!("cargo::rerun-if-changed=../proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    // The probes' pin directory is named by a hash of the object (probes::pin_dir), computed
    // here once rather than at every launch (~0.3 ms for the ~550 KB object).
    {
        use sha2::Digest;
        let object = std::fs::read(out.join("cordon-probes")).context("reading the built probes")?;
        let digest = sha2::Sha256::digest(&object);
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(out.join("cordon-probes.id"), hex).context("writing the probes' id")?;
    }
    let descriptors = out.join("cordon-descriptors.bin");
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptors)
        .compile_protos(&["../proto/cordon/events/v2/events.proto"], &["../proto"])
        .context("compiling the event schema (needs protoc: apt-get install protobuf-compiler)")?;
    let events = std::fs::read(&descriptors).context("reading the event schema's descriptors")?;
    // The JSON of events is the canonical proto3 JSON mapping (lowerCamelCase names, the
    // oneof member as a key, 64-bit integers as strings), not a shape derived from the Rust
    // types: consumers in any language parse it with their protobuf library. Fields at their
    // default value are written too (the mapping allows it), so every line of a kind has the
    // same keys and `.net.allowed == false` works in jq.
    pbjson_build::Builder::new()
        .register_descriptors(&events)?
        .emit_fields()
        .build(&[".cordon.events"])
        .context("generating the event schema's JSON mapping")?;
    // The trace schema and the control socket's messages (whose JSON mapping is the meta file
    // beside the socket) embed the event schema's `Event`: point them at the types above.
    for (proto, package) in [
        ("cordon/trace/v1/trace.proto", ".cordon.trace"),
        ("cordon/control/v1/control.proto", ".cordon.control"),
    ] {
        prost_build::Config::new()
            .file_descriptor_set_path(&descriptors)
            .extern_path(".cordon.events.v2", "crate::events::pb")
            .compile_protos(&[format!("../proto/{proto}")], &["../proto"])
            .with_context(|| format!("compiling {proto}"))?;
        let set = std::fs::read(&descriptors).with_context(|| format!("reading {proto}'s descriptors"))?;
        pbjson_build::Builder::new()
            .register_descriptors(&set)?
            .extern_path(".cordon.events.v2", "crate::events::pb")
            .emit_fields()
            .build(&[package])
            .with_context(|| format!("generating {proto}'s JSON mapping"))?;
    }
    Ok(())
}
