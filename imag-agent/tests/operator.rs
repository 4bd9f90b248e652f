//! The operator's surface, for real: Prometheus metrics moving during a wake, the status, wake
//! and sleep commands against a running agent, and `validate` pointing at every problem.

#![allow(
    clippy::float_cmp,
    reason = "metrics are whole counts carried in f64: equality is exact"
)]

use std::{os::unix::process::CommandExt as _, process::Command, time::Duration};

use imag_testkit::{AgentProcess, IMAGE, TestNet, agent_binary, clients, docker, wait_until};

#[test]
fn metrics_move_with_a_real_wake() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml()
        + &net.http_host("web", 10, &[])
        + &net
            .http_host("broken", 11, &[])
            .replace(IMAGE, "imag-example/missing-30");
    let _agent = net.start_agent(&config, &[]);

    let before = net.scrape();
    assert_eq!(before.value("imag_hosts", &[("state", "asleep")]), 2.0);
    assert_eq!(
        before.value("imag_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        1.0
    );
    assert_eq!(
        before.value(
            "imag_wake_duration_seconds_count",
            &[("host", "web"), ("phase", "total")]
        ),
        0.0
    );

    client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    let _ = client
        .run(|| std::net::TcpStream::connect_timeout(&net.http_addr(11), Duration::from_secs(30)))
        .unwrap();
    // Host states are published as they change; the datapath's own counters every 250 ms.
    let mut after = net.scrape();
    wait_until("the metrics are refreshed", Duration::from_secs(5), || {
        after = net.scrape();
        after.value("imag_hosts", &[("state", "warm")]) == 1.0
            && after.value("imag_datapath_packets_total", &[("verdict", "held")]) >= 2.0
            && after.value("imag_datapath_packets_total", &[("verdict", "passed_warm")]) >= 1.0
    });

    for phase in metrics_phases() {
        let labels = [("host", "web"), ("phase", phase), ("from", "absent")];
        assert_eq!(
            after.value("imag_wake_duration_seconds_count", &labels),
            1.0,
            "{phase}"
        );
        let sum = after.value("imag_wake_duration_seconds_sum", &labels);
        assert!(sum > 0.0 && sum < 30.0, "{phase}: {sum}");
        let mut le_60 = labels.to_vec();
        le_60.push(("le", "60"));
        assert_eq!(
            after.value("imag_wake_duration_seconds_bucket", &le_60),
            1.0
        );
        let mut le_1ms = labels.to_vec();
        le_1ms.push(("le", "0.001"));
        assert!(after.value("imag_wake_duration_seconds_bucket", &le_1ms) <= 1.0);
    }
    assert_eq!(
        after.value(
            "imag_wakes_total",
            &[("host", "web"), ("result", "ok"), ("from", "absent")]
        ),
        1.0
    );
    assert_eq!(
        after.value(
            "imag_wakes_total",
            &[
                ("host", "broken"),
                ("result", "failed"),
                ("reason", "image_missing")
            ]
        ),
        1.0
    );
    assert_eq!(after.value("imag_hosts", &[("state", "failed")]), 1.0);
    assert!(after.value("imag_held_packets_total", &[("outcome", "held")]) >= 2.0);
    assert!(after.value("imag_held_packets_total", &[("outcome", "delivered")]) >= 1.0);
    assert!(after.value("imag_held_packets_total", &[("outcome", "refused")]) >= 1.0);
    assert!(after.value("imag_datapath_packets_total", &[("verdict", "held")]) >= 2.0);
    assert!(after.value("imag_datapath_packets_total", &[("verdict", "passed_warm")]) >= 1.0);
    assert_eq!(after.value("imag_ring_buffer_lost_packets", &[]), 0.0);
    // Warm traffic is counted on the host's own link (attached just after the wake).
    wait_until(
        "warm traffic shows in the host's activity",
        Duration::from_secs(10),
        || {
            client
                .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(5)))
                .unwrap()
                .unwrap();
            let now = net.scrape();
            now.value(
                "imag_host_packets_total",
                &[("host", "web"), ("direction", "out")],
            ) >= 1.0
                && now.value(
                    "imag_host_bytes_total",
                    &[("host", "web"), ("direction", "in")],
                ) > 0.0
        },
    );
}

fn metrics_phases() -> [&'static str; 5] {
    [
        "held_to_start",
        "start_to_running",
        "running_to_ready",
        "ready_to_delivered",
        "total",
    ]
}

fn agent_command(agent: &AgentProcess, args: &[&str]) -> (bool, String, String) {
    let out = agent.run(args).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_wake_and_sleep_drive_a_running_agent() {
    let net = TestNet::new(agent_binary!());
    net.client();
    let config =
        net.network_toml() + &net.http_host("web", 10, &[]) + &net.http_host("db", 11, &[]);
    let agent = net.start_agent(&config, &[]);
    let container = net.container("web");

    let (ok, table, err) = agent_command(&agent, &["status"]);
    assert!(ok, "{err}");
    let header = table.lines().nth(1).unwrap();
    for column in [
        "HOST",
        "ADDRESS",
        "STATE",
        "CONTAINER",
        "LAST WAKE",
        "IDLE FOR",
        "HELD",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains("asleep (absent)")),
        "{table}"
    );

    let (ok, out, err) = agent_command(&agent, &["wake", "web"]);
    assert!(ok && out.contains("waking web"), "{out}{err}");
    wait_until("web is warm", Duration::from_secs(30), || {
        let (_, json, _) = agent_command(&agent, &["status", "--json"]);
        let status: serde_json::Value = serde_json::from_str(&json).unwrap();
        status["hosts"][0]["state"] == "warm"
            && status["hosts"][0]["last_wake_ms"].as_f64().is_some()
    });
    assert_eq!(
        docker::container_status(&container).as_deref(),
        Some("running")
    );

    let (ok, out, err) = agent_command(&agent, &["sleep", "web", "--tier", "pause"]);
    assert!(ok && out.contains("putting web to sleep"), "{out}{err}");
    wait_until("web is paused", Duration::from_secs(15), || {
        docker::container_status(&container).as_deref() == Some("paused")
    });
    let (_, json, _) = agent_command(&agent, &["status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["hosts"][0]["state"], "asleep");
    assert_eq!(status["hosts"][0]["tier"], "paused");

    let (ok, _, err) = agent_command(&agent, &["wake", "nosuchhost"]);
    assert!(!ok && err.contains("no host named \"nosuchhost\""), "{err}");

    // Without --config: by the network's name, or the one agent running.
    let bare = |args: &[&str]| {
        let out = Command::new(agent_binary!())
            .args(args)
            .env_remove("IMAG_CONFIG")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, json, err) = bare(&["status", "--json", "--network", net.network()]);
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(status["network"], net.network());
    assert!(
        status["config"]
            .as_str()
            .and_then(|c| std::path::Path::new(c).extension())
            .is_some_and(|e| e == "toml"),
        "the agent says its configuration file: {status}"
    );
    let (ok, json, err) = bare(&["status", "--json"]);
    if ok {
        let status: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(status["network"], net.network(), "the one running agent");
    } else {
        // Other agents run on this machine: the error lists them, this one among them.
        assert!(
            err.contains("agents are running") && err.contains(net.network()),
            "{err}"
        );
    }
}

#[test]
fn commands_without_a_running_agent_say_so() {
    let net = TestNet::new(agent_binary!());
    let path = net.temp_file("-none.toml");
    std::fs::write(&path, net.network_toml()).unwrap();
    let out = Command::new(agent_binary!())
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no agent is running") && err.contains("imag-agent attach"),
        "{err}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn validate_needs_no_root_and_points_at_every_problem() {
    let dir = std::env::temp_dir();
    let good = dir.join("imag-validate-good.toml");
    std::fs::write(&good, include_str!("../../examples/demo.toml")).unwrap();
    let broken = dir.join("imag-validate-broken.toml");
    std::fs::write(
        &broken,
        r#"[network]
subnet = "10.77.0.0/24"

[[host]]
name = "web"
address = "10.88.0.10"
image = "x"
idle_timeout = "5 minutes-ish"

[[host]]
name = "web"
address = "10.77.0.11"
image = "x"
"#,
    )
    .unwrap();
    let unknown = dir.join("imag-validate-unknown.toml");
    std::fs::write(
        &unknown,
        "[network]\nsubnet = \"10.77.0.0/24\"\nsubnett = \"x\"\n",
    )
    .unwrap();
    for file in [&good, &broken, &unknown] {
        // Readable by the unprivileged user the command runs as.
        let mut perms = std::fs::metadata(file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(file, perms).unwrap();
    }
    let validate = |file: &std::path::Path| {
        let out = Command::new(agent_binary!())
            .args(["validate", "--config"])
            .arg(file)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (ok, out, err) = validate(&good);
    assert!(ok, "{err}");
    assert!(out.contains("ok (1 host in 10.77.0.0/24)"), "{out}");

    let (ok, _, err) = validate(&broken);
    assert!(!ok);
    let path = broken.display();
    for expected in [
        format!(
            "{path}:6:11: address 10.88.0.10 of host \"web\" lies outside the subnet 10.77.0.0/24"
        ),
        format!("{path}:8:16: idle_timeout \"5 minutes-ish\" is not a duration"),
        format!("{path}:11:8: duplicate host name \"web\""),
    ] {
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
    assert!(err.contains("has 3 problems"), "{err}");

    let (ok, _, err) = validate(&unknown);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{}:3:1: unknown field `subnett`",
            unknown.display()
        )),
        "{err}"
    );
}

/// Runs `validate` on `text` as an unprivileged user: (success, stdout, stderr, the file's path).
fn validate_text(name: &str, text: &str) -> (bool, String, String, String) {
    let file =
        std::env::temp_dir().join(format!("imag-validate-{name}-{}.toml", std::process::id()));
    std::fs::write(&file, text).unwrap();
    let mut perms = std::fs::metadata(&file).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    std::fs::set_permissions(&file, perms).unwrap();
    let out = Command::new(agent_binary!())
        .args(["validate", "--config"])
        .arg(&file)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

#[test]
fn validate_refuses_what_would_crash_or_misbehave_at_attach() {
    let (ok, _, err, path) = validate_text(
        "attach",
        r#"[network]
subnet = "10.77.0.0/24"
gateway = "10.77.0.255"
bridge = ".."

[wake]
backoff = "1000000000h"

[[host]]
name = "web"
address = "10.77.0.10"
image = "x"
wake_timeout = "3h"
env = { "A=B" = "1" }
"#,
    );
    assert!(!ok, "{err}");
    for expected in [
        format!(
            "{path}:3:11: gateway 10.77.0.255 is the broadcast address of the subnet 10.77.0.0/24"
        ),
        format!("{path}:4:10: bridge name \"..\" is not a valid interface name"),
        format!("{path}:7:11: backoff \"1000000000h\" is longer than 30days"),
        format!("{path}:13:16: wake_timeout 3h is longer than its maximum 1h"),
        format!("{path}:14:9: environment variable name \"A=B\" of host \"web\" contains '='"),
    ] {
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
    assert!(err.contains("has 5 problems"), "{err}");

    let (ok, _, err, path) = validate_text(
        "subnet",
        "[network]\nsubnet = \"127.0.0.0/24\"\n[hold]\nmax_bytes_per_host = 100000\nmax_bytes = 1000\n",
    );
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{path}:2:10: subnet 127.0.0.0/24 overlaps 127.0.0.0/8, the loopback range"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:4:22: max_bytes_per_host (100000) is above max_bytes (1000)"
        )),
        "{err}"
    );

    let (ok, out, err, path) = validate_text(
        "metrics",
        "[network]\nsubnet = \"10.77.0.0/24\"\n[agent]\nmetrics = \"0.0.0.0:9477\"\n",
    );
    assert!(
        ok,
        "bound to every interface is allowed, with a warning: {err}"
    );
    assert!(
        out.contains(&format!(
            "{path}:4:11: warning: metrics = \"0.0.0.0:9477\" serves /metrics on every interface"
        )),
        "{out}"
    );
}

#[test]
fn attach_refuses_a_bridge_name_taken_by_another_interface() {
    let net = TestNet::new(agent_binary!());
    net.client();
    // The loopback interface exists and is not a bridge.
    let config = net.network_toml().replace(
        &format!("bridge = \"{}\"", net.network()),
        "bridge = \"lo\"",
    ) + &net.http_host("web", 10, &[]);
    let path = net.temp_file("-taken.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(agent_binary!())
        .args(["attach", &net.host_if(), "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "attach should fail: {err}");
    assert!(
        err.contains("the bridge name \"lo\" of [network]")
            && err.contains("not a bridge")
            && err.contains("set `bridge` in [network] to an unused name"),
        "{err}"
    );
    assert!(
        !docker::network_exists(net.network()),
        "nothing was created"
    );
}
