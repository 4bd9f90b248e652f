//! The example image, `imag-example/hello`: examples/hello built as a static binary, FROM scratch.
//! No registry is needed (none exists on the machines imag is tested on).

use std::process::Command;

use anyhow::Context as _;
pub use imag_testkit::IMAGE;

use crate::{run_cmd, workspace_root};

pub fn build() -> anyhow::Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target/example-image");
    run_cmd(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "imag-example",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )
    .context("building the example service failed")?;
    let context = target_dir.join("context");
    std::fs::create_dir_all(&context)?;
    std::fs::copy(
        target_dir.join("x86_64-unknown-linux-gnu/release/hello"),
        context.join("hello"),
    )
    .context("copying the example binary into the image context")?;
    std::fs::copy(
        root.join("examples/hello/Dockerfile"),
        context.join("Dockerfile"),
    )?;
    // The output is shown only when the build fails (the legacy builder warns on every build).
    let out = Command::new("docker")
        .args(["build", "--quiet", "-t", IMAGE])
        .arg(&context)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .context("running docker build")?;
    if !out.status.success() {
        anyhow::bail!(
            "building the example image failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!("xtask: built image {IMAGE}");
    Ok(())
}
