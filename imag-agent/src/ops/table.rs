//! `imag-agent status` as a table.

use std::fmt::Write as _;

use crate::report::StatusReport;

/// The status as a table, as `imag-agent status` prints it.
pub fn render_table(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "network {} ({}): held {}, delivered {}, refused {}, dropped {}",
        report.network,
        report.subnet,
        report.held_packets,
        report.delivered_packets,
        report.refused_packets,
        report.dropped_packets
    );
    let rows: Vec<[String; 9]> = std::iter::once(
        [
            "HOST",
            "ADDRESS",
            "STATE",
            "CONTAINER",
            "LAST WAKE",
            "IDLE FOR",
            "CONNS",
            "HELD",
            "WEIGHT",
        ]
        .map(String::from),
    )
    .chain(report.hosts.iter().map(|h| {
        let state = match (&h.node, &h.tier) {
            (Some(node), _) => format!("{} (on {node})", h.state),
            (None, Some(tier)) => format!("{} ({tier})", h.state),
            (None, None) => h.state.to_string(),
        };
        let last_wake = match (&h.last_failure, h.last_wake_ms, &h.last_wake_from) {
            (Some(failure), _, _) => {
                format!("failed: {}", failure.split(':').next().unwrap_or(failure))
            }
            (None, Some(ms), Some(from)) => format!("{ms:.1} ms from {from}"),
            _ => "-".into(),
        };
        [
            h.name.clone(),
            h.address.clone(),
            state,
            h.container.clone(),
            last_wake,
            h.idle_for_s.map_or("-".into(), |s| format!("{s:.1}s")),
            h.open_connections.to_string(),
            h.held_packets.to_string(),
            mib(h.weight_bytes),
        ]
    }))
    .collect();
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let b = &report.budget;
    let limit = |l: Option<u64>, f: fn(u64) -> String| l.map_or("unlimited".into(), f);
    let _ = writeln!(
        out,
        "budget: warm {}/{}, memory {}/{}, queued {}; evicted {}, refused budget {}, rate {}",
        b.warm,
        limit(b.warm_limit, |n| n.to_string()),
        mib(b.memory_bytes),
        limit(b.memory_limit, mib),
        b.queued,
        b.evictions_max_warm + b.evictions_memory,
        b.refused_budget,
        b.refused_rate
    );
    if let Some(c) = &report.cluster {
        cluster_line(&mut out, c);
    }
    out
}

/// Scale-out: this node, its health, the live nodes and the claims.
fn cluster_line(out: &mut String, c: &crate::report::ClusterView) {
    let nodes: Vec<String> = (c.nodes.iter())
        .map(|n| format!("{} {} serving {}", n.name, n.address, n.serving.len()))
        .collect();
    let _ = writeln!(
        out,
        "cluster: node {} ({}) {}; live nodes: {}; claims won {}, lost {}; fenced {} times",
        c.node,
        c.address,
        if c.healthy {
            "healthy"
        } else {
            "FENCED (lost the store: serves nothing)"
        },
        if nodes.is_empty() {
            "none".into()
        } else {
            nodes.join(", ")
        },
        c.claims_won,
        c.claims_lost,
        c.fences
    );
}

fn mib(bytes: u64) -> String {
    format!("{}MiB", bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        report::{HostStatus, StateName},
        runtime::Tier,
    };

    #[test]
    fn the_table_has_a_row_per_host() {
        let report = StatusReport {
            network: "imag".into(),
            subnet: "10.77.0.0/24".into(),
            hosts: vec![
                HostStatus {
                    name: "web".into(),
                    address: "10.77.0.10".into(),
                    state: StateName::Warm,
                    container: "imag-web".into(),
                    last_wake_ms: Some(272.34),
                    last_wake_from: Some(Tier::Absent),
                    idle_for_s: Some(3.21),
                    ..Default::default()
                },
                HostStatus {
                    name: "db".into(),
                    address: "10.77.0.11".into(),
                    state: StateName::Asleep,
                    tier: Some(Tier::Paused),
                    container: "imag-db".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[1].starts_with("HOST") && lines[1].ends_with("WEIGHT"));
        assert!(
            lines[2].contains("web")
                && lines[2].contains("272.3 ms from absent")
                && lines[2].contains("3.2s")
        );
        assert!(lines[3].contains("asleep (paused)"));
        assert!(lines[4].starts_with("budget: warm 0/unlimited"), "{table}");
    }
}
