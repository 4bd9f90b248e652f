//! Who may reach a host (`allow_from`), for real: a client its host does not allow gets no
//! answer and starts nothing, one it allows wakes its host, and a host woken another way stays
//! unreachable from the denied client. The rule itself, packet by packet and for the link into a
//! container that traffic between hosts meets, is in `datapath.rs`.

use std::time::Duration;

use imag_testkit::{TestNet, agent_binary, clients, docker, wait_until};

#[test]
fn a_denied_client_wakes_nothing_and_reaches_no_warm_host() {
    let net = TestNet::new(agent_binary!());
    let client = net.client();
    let client_addr = client.client_addr().to_string();
    let config = net.network_toml()
        + &net.http_host("open", 10, &[])
        + &format!("allow_from = [\"{client_addr}\"]\n")
        + &net.http_host("closed", 11, &[])
        + "allow_from = [\"10.250.0.0/16\", \"open\"]\n";
    let agent = net.start_agent(&config, &[]);

    // Allowed: the client's address is in the list.
    let (body, _) = client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(30)))
        .unwrap()
        .expect("the allowed client is answered");
    assert_eq!(body, "hello from open\n");

    // Denied: no answer at all (not even a reset), and nothing starts.
    let denied = client
        .run(|| clients::http_get(net.http_addr(11), Duration::from_secs(3)))
        .unwrap();
    assert!(
        denied.is_err(),
        "the denied client got an answer: {denied:?}"
    );
    let closed = agent.host("closed").unwrap();
    assert_eq!(closed["state"], "asleep", "{closed}");
    assert_eq!(
        docker::container_status(&net.container("closed")),
        None,
        "no container for a denied client's packets"
    );
    wait_until("dropped_denied is counted", Duration::from_secs(5), || {
        net.scrape().value(
            "imag_datapath_packets_total",
            &[("verdict", "dropped_denied")],
        ) >= 1.0
    });

    // Woken another way (the operator; its ready probe comes from the gateway, always allowed),
    // the host stays unreachable from the denied client.
    agent.command(&["wake", "closed"]).expect("wake closed");
    wait_until("closed is warm", Duration::from_secs(30), || {
        agent.host("closed").is_ok_and(|h| h["state"] == "warm")
    });
    let denied = client
        .run(|| clients::http_get(net.http_addr(11), Duration::from_secs(3)))
        .unwrap();
    assert!(
        denied.is_err(),
        "the denied client reached the warm host: {denied:?}\n{}",
        agent.log_text()
    );
    // The allowed host still answers.
    let (body, _) = client
        .run(|| clients::http_get(net.http_addr(10), Duration::from_secs(10)))
        .unwrap()
        .expect("the allowed client is still answered");
    assert_eq!(body, "hello from open\n");
}

/// A datapath pinned by an agent from before `allow_from` (no `ALLOW` map) still runs its own
/// programs, which would not enforce it: the next agent refuses to adopt it and says what to do.
#[test]
fn a_datapath_without_the_allow_map_is_not_adopted() {
    let net = TestNet::new(agent_binary!());
    net.client();
    let config = net.network_toml() + &net.http_host("web", 10, &[]);
    net.start_agent(&config, &[]).kill9();
    let pin = std::path::Path::new("/sys/fs/bpf/imag")
        .join(net.network())
        .join("ALLOW");
    std::fs::remove_file(&pin).unwrap_or_else(|e| panic!("removing {}: {e}", pin.display()));
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.start_agent(&config, &[])
    }));
    let Err(panic) = refused else {
        panic!("the agent adopted a datapath without the ALLOW map")
    };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("left by an older imag version") && message.contains("detach"),
        "{message}"
    );
}
