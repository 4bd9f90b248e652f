//! imag and the container engine beside it, for real: the Docker engine restarted while hosts
//! are warm and waking, an operator pausing, renaming and removing a host's container by hand,
//! an operator's own container in a host's way, containers of the old naming scheme, and a settle
//! of a fast-thawed container racing its sleep. imag must follow what the engine says, touch only
//! containers carrying its labels, and leave every host in a true state.

use std::{io::ErrorKind, net::TcpStream, process::Command, time::Duration};

use imag_testkit::{
    AgentProcess, ClientNs, IMAGE, TestNet, agent_binary, clients, docker, wait_until,
};

/// `docker ARGS`, which must succeed.
fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The IDs of every container carrying imag's labels for `host` on `network`.
fn labelled(network: &str, host: &str) -> Vec<String> {
    docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=imag.network={network}"),
        "--filter",
        &format!("label=imag.host={host}"),
    ])
    .split_whitespace()
    .map(String::from)
    .collect()
}

/// GET of host `web` (.10) from the client namespace; panics with the agent's log if unanswered.
fn get_web(client: &ClientNs, net: &TestNet, agent: &AgentProcess) -> (String, Duration) {
    client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .unwrap_or_else(|e| panic!("GET web: {e}\n{}", agent.log_text()))
}

/// Waits until host `name`'s status satisfies `check`.
fn wait_for_host(
    agent: &AgentProcess,
    name: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) {
    wait_until(what, Duration::from_mins(1), || {
        agent.host(name).is_ok_and(|h| check(&h))
    });
}

/// A container removed on drop (also when the test fails).
struct Removed(String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn dockerd_restarting_while_one_host_is_warm_and_another_waking_leaves_every_host_true() {
    // Restarting the engine stops other tests' containers: nobody else may run meanwhile.
    let _lock = imag_testkit::serialised();
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let live_restore = docker::live_restore();
    // "slow" is still waking (its probe waits 8 s) when the engine goes down.
    let slow = net.http_host("slow", 11, &[]).replace(
        "ports = [8080]",
        "ports = [8080]\nready = \"delay:8s\"\nwake_timeout = \"30s\"",
    );
    let config = net.network_toml() + &net.http_host("web", 10, &[]) + &slow;
    let agent = net.start_agent(&config, &[]);

    client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .expect("web wakes");
    std::thread::scope(|s| {
        let waking = s.spawn(|| {
            client
                .run(|| TcpStream::connect_timeout(&net.http_addr(11), Duration::from_secs(30)))
                .unwrap()
        });
        wait_for_host(&agent, "slow", "slow is waking", |h| h["state"] == "waking");
        docker::restart_engine().unwrap_or_else(|e| panic!("{e}"));

        // The held SYN is answered one way or the other, never left to time out.
        match waking.join().unwrap() {
            Ok(_) => {}
            Err(err) => assert_eq!(
                err.kind(),
                ErrorKind::ConnectionRefused,
                "slow's held SYN was lost: {err}\n{}",
                agent.log_text()
            ),
        }
    });

    if live_restore {
        wait_for_host(&agent, "web", "web is still warm", |h| h["state"] == "warm");
    } else {
        wait_for_host(&agent, "web", "web follows its stopped container", |h| {
            h["state"] == "asleep" && h["tier"] == "stopped"
        });
        assert_eq!(
            docker::container_status(&net.container("web")).as_deref(),
            Some("exited")
        );
    }
    // slow ends warm (its wake outran the restart) or failed/asleep with a tier that is true.
    let slow = agent.host("slow").unwrap();
    let engine = docker::container_status(&net.container("slow"));
    match slow["state"].as_str() {
        Some("warm") => assert_eq!(engine.as_deref(), Some("running"), "{slow}"),
        Some("failed" | "asleep") => {
            let expected = match engine.as_deref() {
                None => "absent",
                Some("paused") => "paused",
                Some("running") => {
                    assert_eq!(slow["state"], "failed", "{slow}");
                    "any"
                }
                Some(_) => "stopped",
            };
            assert!(
                expected == "any" || slow["tier"] == expected,
                "{slow} vs {engine:?}"
            );
        }
        other => panic!("slow is {other:?} after the restart:\n{}", agent.log_text()),
    }
    let status = agent.status().unwrap();
    assert_eq!(status["dropped_packets"], 0, "{status}");
    assert_eq!(
        status["held_packets"].as_u64(),
        Some(
            status["delivered_packets"].as_u64().unwrap()
                + status["refused_packets"].as_u64().unwrap()
        ),
        "every held packet delivered or refused: {status}"
    );

    // The next packets wake both, each into exactly one container.
    client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .unwrap_or_else(|e| panic!("web after the restart: {e}\n{}", agent.log_text()));
    wait_until("slow's backoff is over", Duration::from_secs(30), || {
        client
            .run(|| clients::http_get(net.http_addr(11), Duration::from_secs(30)))
            .unwrap()
            .is_ok()
    });
    for host in ["web", "slow"] {
        assert_eq!(labelled(net.network(), host).len(), 1, "{host}");
    }
}

#[test]
fn an_operator_pausing_renaming_and_removing_a_host_s_container_is_followed() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let agent = net.start_agent(&config, &[]);
    let get = || get_web(client, &net, &agent);
    get();
    let container = net.container("web");

    docker_cli(&["pause", &container]);
    wait_for_host(&agent, "web", "web is paused", |h| {
        h["state"] == "asleep" && h["tier"] == "paused"
    });
    get();
    assert_eq!(agent.host("web").unwrap()["state"], "warm");
    // With fast thaw the engine learns that it runs when imag settles its view (once quiet).
    wait_until("the engine says web runs", Duration::from_secs(15), || {
        docker::container_status(&container).as_deref() == Some("running")
    });

    let renamed = format!("{}-by-hand", net.network());
    docker_cli(&["rename", &container, &renamed]);
    // Still the host's container (by its labels): it keeps serving, and imag drives it.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.host("web").unwrap()["state"], "warm");
    get();
    agent.command(&["sleep", "web", "--tier", "pause"]).unwrap();
    wait_for_host(&agent, "web", "web sleeps", |h| h["state"] == "asleep");
    assert_eq!(
        docker::container_status(&renamed).as_deref(),
        Some("paused"),
        "imag paused the renamed container"
    );
    get();

    docker_cli(&["rm", "-f", &renamed]);
    wait_for_host(&agent, "web", "web is cold", |h| {
        h["state"] == "asleep" && h["tier"] == "absent"
    });
    get();
    assert_eq!(
        docker::container_status(&container).as_deref(),
        Some("running")
    );
    assert_eq!(labelled(net.network(), "web").len(), 1);
}

#[test]
fn an_operator_s_unlabelled_container_with_a_host_s_name_is_reported_and_left_alone() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let foreign = Removed(net.container("web"));
    let id = docker_cli(&["create", "--name", &foreign.0, IMAGE]);
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let mut agent = net.start_agent(&config, &[]);

    let answer = client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        answer.map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionRefused),
        "the held SYN is refused"
    );
    let web = agent.host("web").unwrap();
    assert_eq!(web["state"], "failed", "{web}");
    let failure = web["last_failure"].to_string();
    assert!(
        failure.contains("foreign_container")
            && failure.contains(&foreign.0)
            && failure.contains("no imag labels")
            && failure.contains("docker rm"),
        "{failure}"
    );
    assert!(agent.pid().is_some(), "the agent is still running");

    // Neither the agent's exit (which detaches) nor `detach` touches it.
    agent.stop().unwrap();
    let detach = Command::new(agent_binary!())
        .args(["detach", "--config"])
        .arg(agent.config())
        .output()
        .unwrap();
    assert!(detach.status.success(), "{detach:?}");
    assert_eq!(
        docker::inspect(&foreign.0, "{{.Id}}").as_deref(),
        Some(id.as_str())
    );
}

#[test]
fn a_container_named_by_the_old_scheme_is_recognised_by_its_labels_and_renamed() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let mut agent = net.start_agent(&config, &["--on-exit", "keep"]);
    client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    agent.stop().unwrap();
    let old = format!("{}-web", net.network());
    docker_cli(&["rename", &net.container("web"), &old]);

    let agent = net.start_agent(&config, &[]);
    assert_eq!(agent.host("web").unwrap()["state"], "warm", "adopted");
    assert_eq!(
        docker::container_status(&net.container("web")).as_deref(),
        Some("running"),
        "renamed to <network>--<host>"
    );
    assert_eq!(docker::container_status(&old), None);
    client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .unwrap();
    assert_eq!(labelled(net.network(), "web").len(), 1);
}

/// A settle of a fast-thawed container and a sleep of it asked for at once — the trace bench's
/// host that went quiet for a second (its settle) and idle in the same breath (its sleep) —
/// leave it paused with the engine agreeing, and its next wake a thaw. Interleaved, the settle's
/// engine unpause could land after the sleep had frozen it again: the container ran while the
/// agent had it asleep, and every later wake was refused ("not paused"). Driven through the
/// runtime itself, on the container an agent made and left behind (`--on-exit keep`), with the
/// sleep started at several offsets into the settle's engine round trip. And a wake from pause
/// of a container that runs already (the engine refuses the unpause) finds it running.
#[test]
fn a_settle_and_a_sleep_of_one_container_at_once_leave_it_paused_and_wakeable() {
    use imag_agent::{
        config::Config,
        runtime::{ContainerRuntime as _, EngineOptions, Tier, docker::Docker},
    };

    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    let mut agent = net.start_agent(&config, &["--on-exit", "keep"]);
    let get = || get_web(client, &net, &agent);
    get();
    agent.stop().expect("the agent stops, leaving web running");
    let container = net.container("web");
    let parsed = Config::parse(&config, "test").expect("the test's config is valid");
    let spec = parsed
        .host("web")
        .expect("web is configured")
        .container_spec(&parsed.network.name);

    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let engine = Docker::connect(EngineOptions {
            fast_thaw: true,
            dns: Vec::new(),
        })
        .await
        .expect("the engine answers");
        engine.sleep(&spec, Tier::Paused).await.expect("paused");
        for offset_ms in [0, 1, 2, 4, 6, 8, 12, 16] {
            engine.wake(&spec, Tier::Paused).await.expect("thawed");
            assert!(engine.unsettled(&spec), "woken by fast thaw");
            let settle = engine.settle(&spec);
            let sleep = async {
                tokio::time::sleep(Duration::from_millis(offset_ms)).await;
                engine.sleep(&spec, Tier::Paused).await
            };
            let (settled, slept) = tokio::join!(settle, sleep);
            settled.unwrap_or_else(|e| panic!("settle, sleep {offset_ms} ms in: {e}"));
            slept.unwrap_or_else(|e| panic!("sleep {offset_ms} ms into a settle: {e}"));
            assert_eq!(
                docker::container_status(&container).as_deref(),
                Some("paused"),
                "the engine says paused after a sleep {offset_ms} ms into a settle"
            );
        }
        engine
            .wake(&spec, Tier::Paused)
            .await
            .expect("thawed at last");
        engine
            .settle(&spec)
            .await
            .expect("settled: the engine says running");
        // A wake from a pause the engine has already undone (running, as after an operator's
        // `docker unpause`): the engine refuses the unpause ("not paused"), and the wake finds
        // the container running instead of failing.
        engine
            .wake(&spec, Tier::Paused)
            .await
            .expect("the wake of a running container is done");
        assert_eq!(
            docker::container_status(&container).as_deref(),
            Some("running")
        );
    });
    let (body, _) = get_web(client, &net, &agent);
    assert_eq!(body, "hello from web\n", "web answers, awake");
}
