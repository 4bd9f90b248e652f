//! The kernel's own run-time statistics of BPF programs, read around a traffic: what each
//! program cost per run over a few passes (`per_packet.rs`).

use std::collections::HashMap;

use aya::programs::{ProgramInfo, loaded_programs};

/// Each workload is measured this many times in a row; a program's figure is the median pass.
/// A pass of one-at-a-time traffic lasts under a second, and one disturbed by other work on the
/// machine can cost half as much again (126, 168 and 205 ns in one run's three passes): five
/// passes let the median stand clear of two such.
pub const PASSES: usize = 5;

/// Run count and run time (ns) of each program in `ids`.
fn snapshot(ids: &[u32]) -> HashMap<u32, (String, &'static str, u64, u64)> {
    loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .filter_map(|p: ProgramInfo| {
            // aya does not re-export the kernel's program type enum: its name tells. The
            // tracepoint (TCP state changes) runs per connection, not per packet.
            let kind = match format!("{:?}", p.program_type()) {
                t if t.ends_with("_XDP") => "xdp",
                t if t.ends_with("_SCHED_CLS") => "tc",
                _ => return None,
            };
            Some((
                p.id(),
                (
                    p.name_as_str().unwrap_or("?").to_string(),
                    kind,
                    p.run_count(),
                    u64::try_from(p.run_time().as_nanos()).unwrap_or(u64::MAX),
                ),
            ))
        })
        .collect()
}

pub type Workload<'a> = (
    &'static str,
    Box<dyn Fn() -> anyhow::Result<()> + Sync + 'a>,
);

/// A program's passes: its name, kind, runs over all passes, each pass's average ns.
pub type Passes = (String, &'static str, u64, Vec<f64>);

/// What each program in `ids` cost per run over [`PASSES`] runs of `traffic`, by id.
pub fn passes(
    ids: &[u32],
    traffic: &(dyn Fn() -> anyhow::Result<()> + Sync),
) -> anyhow::Result<HashMap<u32, Passes>> {
    let mut passes: HashMap<u32, Passes> = HashMap::new();
    for _ in 0..PASSES {
        let before = snapshot(ids);
        traffic()?;
        let after = snapshot(ids);
        for (id, (program, kind, runs, ns)) in after {
            let (_, _, runs0, ns0) = before.get(&id).cloned().unwrap_or_default();
            let runs = runs - runs0;
            if runs == 0 {
                continue;
            }
            #[allow(
                clippy::cast_precision_loss,
                reason = "nanoseconds and run counts of one measurement"
            )]
            let ns_per_run = (ns - ns0) as f64 / runs as f64;
            let entry = passes.entry(id).or_insert((program, kind, 0, Vec::new()));
            entry.2 += runs;
            entry.3.push(ns_per_run);
        }
    }
    Ok(passes)
}
