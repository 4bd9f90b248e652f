//! Builds the eBPF object from `imag-ebpf` (nightly, bpfel-unknown-none, bpf-linker) and leaves it
//! in `OUT_DIR`, from where `src/datapath` embeds it into the agent binary.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../imag-ebpf");
    let ebpf_dir = ebpf_dir
        .canonicalize()
        .with_context(|| format!("finding the eBPF crate at {}", ebpf_dir.display()))?;
    check_toolchain()?;
    emit_git_revision(Path::new(&manifest_dir));
    let root_dir = ebpf_dir.to_str().context("eBPF crate path is not UTF-8")?;
    // aya-build forwards the inner cargo's progress lines as build warnings; keep only real
    // diagnostics. SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("CARGO_TERM_QUIET", "true") };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "imag-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// `IMAG_GIT_REVISION` for the `build_info` metric ("unknown" outside a git checkout).
fn emit_git_revision(manifest_dir: &Path) {
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(manifest_dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        );
    println!("cargo:rustc-env=IMAG_GIT_REVISION={revision}");
    let git = manifest_dir.join("../.git");
    for file in ["HEAD", "index"] {
        if git.join(file).exists() {
            println!("cargo:rerun-if-changed={}", git.join(file).display());
        }
    }
}

/// Fails with one sentence naming the fix instead of a page of linker errors.
fn check_toolchain() -> anyhow::Result<()> {
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|out| out.status.success()) {
        bail!(
            "bpf-linker is not installed (or does not run): run `cargo xtask setup`, which builds it \
             against the nightly toolchain's LLVM"
        );
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .context("running `rustup run nightly rustc --print sysroot`: is rustup installed?")?;
    if !sysroot.status.success() {
        bail!("the nightly Rust toolchain is missing: run `cargo xtask setup`");
    }
    let sysroot = String::from_utf8_lossy(&sysroot.stdout);
    let core_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !core_src.exists() {
        bail!(
            "the nightly toolchain has no rust-src component (needed to build core for BPF): run \
             `cargo xtask setup`"
        );
    }
    Ok(())
}
