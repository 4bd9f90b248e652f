//! The compose application of `examples/compose/`, unmodified but for its addresses and network
//! name (so that it runs beside other tests): all three services cold, one request from a client
//! wakes frontend → backend → db, each calling the next BY SERVICE NAME (the agent answers DNS for
//! cold hosts; Docker's embedded resolver forwards those names to it), with no SYN retransmission.

use std::{process::Command, time::Duration};

use imag_testkit::{AgentProcess, Launch, TestNet, agent_binary, clients, wait_until};

const EXAMPLE: &str = include_str!("../../examples/compose/docker-compose.yml");

/// The example, moved onto the test network's subnet and named after it.
fn example_on(net: &TestNet) -> String {
    let prefix = net.subnet().trim_end_matches(".0/24").to_string();
    let text = EXAMPLE.replace("10.77.0.", &format!("{prefix}."));
    text.replacen(
        "x-imag:\n",
        &format!(
            "x-imag:\n  network:\n    name: {0}\n    bridge: {0}\n  agent:\n    metrics: \"{1}\"\n",
            net.network(),
            net.metrics_addr()
        ),
        1,
    )
}

/// Removes the example's named volume before and after the test.
struct Volume(&'static str);

impl Volume {
    fn fresh(name: &'static str) -> Volume {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", name])
            .output();
        Volume(name)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", self.0])
            .output();
    }
}

#[test]
fn one_request_wakes_the_compose_chain_by_service_names() {
    let net = TestNet::new(agent_binary!());
    let _volume = Volume::fresh("dbdata");
    let client = net.client();
    let path = net.temp_file(".yml");
    std::fs::write(&path, example_on(&net)).unwrap();
    let mut launch = Launch::new(agent_binary!(), &path, &[&net.host_if()]);
    launch.log_filter = "imag_agent=debug".into();
    launch.echo = true;
    let agent = AgentProcess::start(launch).unwrap();
    let status = agent.status().unwrap();
    assert_eq!(status["hosts"].as_array().unwrap().len(), 3);
    assert!(net.containers().is_empty(), "every service starts cold");

    let frontend = net.http_addr(20);
    let (answer, retransmits) = client
        .run(|| {
            let answer = clients::http_get(frontend, Duration::from_mins(1));
            (answer, clients::net_counter("TcpExt", "TCPSynRetrans"))
        })
        .unwrap();
    let (body, _) = answer.expect("the frontend answers");
    // "frontend via backend: backend: backend via backend: hello from db: db (start 1)"
    assert!(
        body.starts_with("frontend via backend: ")
            && body.contains("backend via backend: ")
            && body.contains("hello from db")
            && body.contains("(start 1)")
            && !body.contains("failed"),
        "each hop called the next by name: {body:?}"
    );
    assert_eq!(
        retransmits.unwrap(),
        0,
        "the client's first SYN was answered"
    );
    for host in ["frontend", "backend", "db"] {
        wait_until(&format!("{host} is warm"), Duration::from_secs(5), || {
            agent.host(host).unwrap()["state"] == "warm"
        });
    }
}
