//! What the Docker engine says about the containers and networks imag manages, read through the
//! `docker` CLI so that tests observe the engine the way an operator would, independent of the
//! agent's own engine client. [`crate::testnet`] also removes leftovers through these.

use std::process::Command;

/// `docker inspect --format FORMAT container`, trimmed; `None` if it does not exist.
pub fn inspect(container: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The container's state as `docker inspect` reports it (`running`, `paused`, `exited`, …).
pub fn container_status(container: &str) -> Option<String> {
    inspect(container, "{{.State.Status}}")
}

/// The container's address on `network`.
pub fn container_address(container: &str, network: &str) -> Option<String> {
    inspect(
        container,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
    )
}

/// The container's MAC address on `network`.
pub fn container_mac(container: &str, network: &str) -> Option<String> {
    inspect(
        container,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").MacAddress}}}}"),
    )
}

/// Containers (any state) that imag labelled as belonging to `network`.
pub fn containers_on(network: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=imag.network={network}"),
        ])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// Whether the engine has a network named `network`.
pub fn network_exists(network: &str) -> bool {
    Command::new("docker")
        .args(["network", "inspect", network])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes `network` and every container imag labelled as belonging to it; what does not
/// exist is skipped.
pub fn remove_network(network: &str) {
    for id in containers_on(network) {
        let _ = Command::new("docker").args(["rm", "-f", &id]).output();
    }
    if network_exists(network) {
        let _ = Command::new("docker")
            .args(["network", "rm", network])
            .output();
    }
}

/// Whether the engine has the image `image`.
pub fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success())
}
