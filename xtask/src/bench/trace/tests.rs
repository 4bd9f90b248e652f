//! The trace bench's configuration and request paths (`mod.rs`).

use super::*;

/// A day of `hosts` hosts replayed in 240 s, from `seed`.
fn day_trace(hosts: usize, seed: u64) -> Trace {
    let opts = TraceOptions {
        secs: 240.0,
        hosts,
        seed: Some(seed),
        hours: 24.0,
        max_rps: 20.0,
        policies: String::new(),
    };
    workload::generate(&plan(&opts).unwrap().params).unwrap()
}

#[test]
fn every_policy_configures_every_host_with_its_ballast_and_calls() {
    let trace = day_trace(12, 3);
    for policy in policy::ALL {
        let text = config_text(&trace, &policy);
        if let Ok(dir) = std::env::var("IMAG_TRACE_CONFIG_DIR") {
            std::fs::write(format!("{dir}/{}.toml", policy.name), &text).unwrap();
        }
        assert_eq!(text.matches("[[host]]").count(), 12, "{}", policy.name);
        assert_eq!(text.matches("BALLAST_MB").count(), 12, "{}", policy.name);
        let calls = trace.hosts.iter().filter(|h| h.calls.is_some()).count();
        assert_eq!(text.matches("--backend").count(), calls, "{}", policy.name);
        assert_eq!(
            text.contains("memory_budget"),
            policy.kind == policy::Kind::PauseBudget,
            "{}",
            policy.name
        );
    }
}

#[test]
fn a_request_passes_through_the_chain_of_its_application() {
    let trace = day_trace(40, 1);
    let caller = trace.hosts.iter().position(|h| h.calls.is_some()).unwrap();
    let chain = path(&trace, caller);
    assert!(chain.len() >= 2);
    assert!(
        chain[1..]
            .iter()
            .all(|n| n.starts_with(&format!("a{}f", trace.hosts[caller].app)))
    );
}
