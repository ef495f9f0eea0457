//! Builds the eBPF object (fragtrace-ebpf) for the BPF target with aya-build; the binary embeds it.
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
    )
}
