//! Builds the eBPF object (fragtrace-ebpf) for the BPF target with aya-build; the library embeds
//! it. With AYA_BUILD_SKIP=1 (lint, fuzz) no object is built and an empty one is embedded: such a
//! build parses and analyses, but cannot load programs.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = format!("{manifest_dir}/../fragtrace-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "fragtrace-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    let object = std::path::Path::new(&std::env::var("OUT_DIR")?).join("fragtrace");
    if !object.exists() {
        std::fs::write(object, [])?;
    }
    Ok(())
}
