//! A host's container options, for real: a named volume keeps its data through `sleep --tier
//! remove` and `detach`, and `ready = "healthy"` releases held packets when the engine's
//! healthcheck passes (and fails a wake at once when there is no healthcheck to wait for).

mod common;

use std::{process::Command, time::Duration};

use common::{Agent, Slot, docker_inspect, http_addr, netkit, wait_until};

const WAKE: Duration = Duration::from_secs(30);

/// One HTTP request from the client namespace to host number `i`.
fn request(client: &netkit::ClientNs, slot: &Slot, i: u8) -> std::io::Result<String> {
    client
        .run(|| netkit::http_get(http_addr(slot.host_addr(i)), WAKE))
        .unwrap()
        .map(|(body, _)| body)
}

/// `imag-agent ARGS --config <the agent's config>`: (success, stdout + stderr).
fn agent_command(agent: &Agent, args: &[&str]) -> (bool, String) {
    let out = Command::new(common::agent_binary())
        .args(args)
        .arg("--config")
        .arg(&agent.config_path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn volume_exists(name: &str) -> bool {
    Command::new("docker")
        .args(["volume", "inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Removes the test's volume before and after the test (also when it fails).
struct VolumeGuard(String);

impl VolumeGuard {
    fn new(name: String) -> VolumeGuard {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &name])
            .output();
        VolumeGuard(name)
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.0])
            .output();
    }
}

#[test]
fn a_named_volume_keeps_its_data_through_sleep_remove_and_detach() {
    common::require_environment();
    let slot = Slot::new(70);
    let volume = VolumeGuard::new(format!("{}-data", slot.network()));
    let client = slot.client();
    let config = slot.network_toml()
        + &slot.http_host("db", 10, &["--count-file", "/data/starts"])
        + &format!("volumes = [\"{}:/data\"]\nsleep = \"remove\"\n", volume.0);
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let container = slot.container("db");

    assert_eq!(
        request(&client, &slot, 10).unwrap(),
        "hello from db (start 1)\n"
    );
    let (ok, out) = agent_command(&agent, &["sleep", "db", "--tier", "remove"]);
    assert!(ok, "{out}");
    wait_until("the container is removed", Duration::from_secs(15), || {
        docker_inspect(&container, "{{.Id}}").is_none()
    });
    agent.wait_for_log("asleep host=db tier=\"absent\"", Duration::from_secs(5));
    assert!(
        volume_exists(&volume.0),
        "the volume outlives its container"
    );

    assert_eq!(
        request(&client, &slot, 10).unwrap(),
        "hello from db (start 2)\n",
        "a new container, the same data"
    );
    assert_eq!(
        docker_inspect(&container, "{{.HostConfig.RestartPolicy.Name}}").as_deref(),
        Some("no"),
        "imag owns the lifecycle"
    );

    let (ok, out) = agent_command(&agent, &["detach"]);
    assert!(ok, "{out}");
    wait_until(
        "detach removed the container",
        Duration::from_secs(30),
        || common::containers_of(&slot).is_empty(),
    );
    assert!(volume_exists(&volume.0), "detach leaves the data");
}

#[test]
fn ready_healthy_releases_held_packets_when_the_healthcheck_passes() {
    common::require_environment();
    let slot = Slot::new(71);
    let client = slot.client();
    let config = slot.network_toml()
        + &slot.http_host("web", 10, &["--delay-ms", "300"])
        + "ready = \"healthy\"\nhealthcheck = { test = [\"CMD\", \"/hello\", \"--probe\", \
           \"8080\"], interval = \"100ms\", timeout = \"1s\", retries = 50 }\n"
        + &slot.http_host("bare", 11, &[])
        + "ready = \"healthy\"\n";
    let mut agent = Agent::start(&slot, &config, &[&slot.host_if()]);
    let container = slot.container("web");

    assert_eq!(request(&client, &slot, 10).unwrap(), "hello from web\n");
    assert_eq!(
        docker_inspect(&container, "{{.State.Health.Status}}").as_deref(),
        Some("healthy"),
        "released once the engine said healthy"
    );
    let woke = agent.wait_for_log("woke host=web", Duration::from_secs(5));
    assert!(woke.contains("outcome=\"ok\""), "{woke}");

    // Neither the host nor its image has a healthcheck: the wake fails at once, saying so, and
    // the client is refused instead of waiting out the wake timeout.
    let started = std::time::Instant::now();
    let refused = request(&client, &slot, 11);
    assert!(refused.is_err(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let failed = agent.wait_for_log("wake failed host=bare", Duration::from_secs(5));
    assert!(
        failed.contains("no_healthcheck") && failed.contains("add one to the host or its image"),
        "{failed}"
    );
}
