//! Brings what building the eBPF programs needs, when it is missing:
//!
//! - the nightly toolchain with its `rust-src` component (to build `core` for the BPF target);
//! - `bpf-linker`, built against the nightly toolchain's own LLVM. crates.io's default feature
//!   links a newer LLVM than the one rustc ships here, so the linker is built with
//!   `--no-default-features --features llvm-<major>` and an `LLVM_PREFIX` whose `lib/` holds
//!   symlinks to the toolchain's `libLLVM`. The prefix lives under `CARGO_HOME` because the linker
//!   loads that library from there at run time (RUNPATH).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd_output as output, run_cmd};

pub fn run() -> anyhow::Result<()> {
    put_cargo_bin_on_path();
    if output(Command::new("rustup").arg("--version")).is_none() {
        bail!(
            "rustup is not installed: imag's eBPF programs build with a nightly toolchain managed \
             by rustup; install it from https://rustup.rs"
        );
    }
    ensure_nightly_with_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
}

/// `cargo install` puts bpf-linker into `CARGO_HOME/bin`; make sure builds find it there.
fn put_cargo_bin_on_path() {
    let bin = cargo_home().join("bin");
    let path = env::var_os("PATH").unwrap_or_default();
    if !env::split_paths(&path).any(|p| p == bin) {
        let mut paths: Vec<PathBuf> = vec![bin];
        paths.extend(env::split_paths(&path));
        let joined = env::join_paths(paths).expect("PATH entries are valid");
        // SAFETY: the xtask is single-threaded at this point.
        unsafe { env::set_var("PATH", joined) };
    }
}

fn nightly_sysroot() -> Option<PathBuf> {
    output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
        .map(PathBuf::from)
}

fn ensure_nightly_with_rust_src() -> anyhow::Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!("xtask: installing the nightly toolchain (needed to build the eBPF programs)");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context(
            "installing the nightly toolchain failed; check network access to static.rust-lang.org",
        )?;
    }
    let sysroot =
        nightly_sysroot().context("the nightly toolchain does not run after installing it")?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: adding the rust-src component to the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain failed; check network access")?;
    }
    Ok(())
}

fn bpf_linker_works() -> bool {
    output(Command::new("bpf-linker").arg("--version")).is_some()
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    if bpf_linker_works() {
        return Ok(());
    }
    let sysroot = nightly_sysroot().context("the nightly toolchain is missing")?;
    let version = output(Command::new("rustup").args(["run", "nightly", "rustc", "-vV"]))
        .context("running the nightly rustc failed")?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("the nightly rustc does not say which LLVM it uses")?
        .to_string();
    let lib_dir = sysroot.join("lib");
    #[allow(
        clippy::case_sensitive_file_extension_comparisons,
        reason = "the toolchain names its libraries itself, in lower case"
    )]
    let libllvm = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so"))
            })
        })
        .with_context(|| {
            format!(
                "no libLLVM in {}: the nightly toolchain looks incomplete",
                lib_dir.display()
            )
        })?;

    let prefix = cargo_home().join(format!("imag-llvm-{llvm_major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let soname = libllvm.file_name().expect("a file").to_owned();
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&soname)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} to {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "xtask: building bpf-linker against the nightly toolchain's LLVM {llvm_major} (about 2 minutes, once)"
    );
    run_cmd(
        Command::new(env!("CARGO"))
            .args([
                "install",
                "bpf-linker",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{llvm_major}"))
            .env("LLVM_PREFIX", &prefix),
    )
    .context(
        "building bpf-linker failed; it needs a C compiler (gcc) and network access to crates.io",
    )?;
    if !bpf_linker_works() {
        bail!(
            "bpf-linker was built but does not run; check that {} points at the nightly toolchain's libLLVM",
            prefix_lib.display()
        );
    }
    Ok(())
}
