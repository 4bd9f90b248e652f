//! A host's container options, for real: a named volume keeps its data through `sleep --tier
//! remove` and `detach`, and `ready = "healthy"` releases held packets when the engine's
//! healthcheck passes (and fails a wake at once when there is no healthcheck to wait for).

use std::{process::Command, time::Duration};

use imag_testkit::{TestNet, agent_binary, clients, docker, wait_until};

const WAKE: Duration = Duration::from_secs(30);

/// One HTTP request from the client namespace to host number `i`.
fn request(net: &TestNet, i: u8) -> std::io::Result<String> {
    net.client()
        .run(|| clients::http_get(net.http_addr(i), WAKE))
        .unwrap()
        .map(|(body, _)| body)
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
    let net = TestNet::new(agent_binary!());
    let volume = VolumeGuard::new(format!("{}-data", net.network()));
    let config = net.network_toml()
        + &net.http_host("db", 10, &["--count-file", "/data/starts"])
        + &format!("volumes = [\"{}:/data\"]\nsleep = \"remove\"\n", volume.0);
    net.client(); // the client's link is what the agent attaches to
    let agent = net.start_agent(&config, &[]);
    let container = net.container("db");

    assert_eq!(request(&net, 10).unwrap(), "hello from db (start 1)\n");
    agent.command(&["sleep", "db", "--tier", "remove"]).unwrap();
    wait_until("the container is removed", Duration::from_secs(15), || {
        docker::inspect(&container, "{{.Id}}").is_none()
    });
    wait_until(
        "the host is asleep, removed",
        Duration::from_secs(5),
        || {
            let db = agent.host("db").unwrap();
            db["state"] == "asleep" && db["tier"] == "absent"
        },
    );
    assert!(
        volume_exists(&volume.0),
        "the volume outlives its container"
    );

    assert_eq!(
        request(&net, 10).unwrap(),
        "hello from db (start 2)\n",
        "a new container, the same data"
    );
    assert_eq!(
        docker::inspect(&container, "{{.HostConfig.RestartPolicy.Name}}").as_deref(),
        Some("no"),
        "imag owns the lifecycle"
    );

    agent.command(&["detach"]).unwrap();
    wait_until(
        "detach removed the container",
        Duration::from_secs(30),
        || net.containers().is_empty(),
    );
    assert!(volume_exists(&volume.0), "detach leaves the data");
}

#[test]
fn ready_healthy_releases_held_packets_when_the_healthcheck_passes() {
    let net = TestNet::new(agent_binary!());
    let config = net.network_toml()
        + &net.http_host("web", 10, &["--delay-ms", "300"])
        + "ready = \"healthy\"\nhealthcheck = { test = [\"CMD\", \"/hello\", \"--probe\", \
           \"8080\"], interval = \"100ms\", timeout = \"1s\", retries = 50 }\n"
        + &net.http_host("bare", 11, &[])
        + "ready = \"healthy\"\n";
    net.client(); // the client's link is what the agent attaches to
    let agent = net.start_agent(&config, &[]);
    let container = net.container("web");

    assert_eq!(request(&net, 10).unwrap(), "hello from web\n");
    assert_eq!(
        docker::inspect(&container, "{{.State.Health.Status}}").as_deref(),
        Some("healthy"),
        "released once the engine said healthy"
    );
    let web = agent.host("web").unwrap();
    assert_eq!(web["state"], "warm");
    assert!(web["last_wake_ms"].as_f64().is_some(), "{web}");

    // Neither the host nor its image has a healthcheck: the wake fails at once, saying so, and
    // the client is refused instead of waiting out the wake timeout.
    let started = std::time::Instant::now();
    let refused = request(&net, 11);
    assert!(refused.is_err(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let failure = agent.host("bare").unwrap()["last_failure"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        failure.contains("no_healthcheck") && failure.contains("add one to the host or its image"),
        "{failure}"
    );
}
