//! `swap_after`: a host asleep in the pause tier for that long has its memory paged out to the
//! machine's swap (`runtime::memory`), once per sleep. Nothing changes in its state: it is still
//! paused, and a wake thaws it as from any pause (its pages come back as it touches them).
//! Whether and how much it paged out shows in `status` and in `imag_page_outs_total{result}` /
//! `imag_paged_out_bytes_total`.

use tracing::{debug, warn};

use super::Orchestrator;
use crate::{
    datapath::HostTable,
    runtime::{ContainerRuntime, PagedOut, RuntimeError},
};

impl<R: ContainerRuntime, D: HostTable> Orchestrator<R, D> {
    pub(super) fn start_page_out(&mut self, id: usize) {
        let host = &mut self.hosts[id];
        host.page_out_epoch = Some(host.epoch);
        host.paged_out_bytes = 0;
        debug!(host = %host.config.name, "paging out to swap");
        self.jobs.page_out(id, host.epoch, host.spec.clone());
    }

    pub(super) fn paged_out(
        &mut self,
        id: usize,
        epoch: u64,
        result: Result<PagedOut, RuntimeError>,
    ) {
        let host = &mut self.hosts[id];
        match result {
            Ok(paged) => {
                let moved = paged.before.saturating_sub(paged.after);
                debug!(
                    host = %host.config.name,
                    before = paged.before,
                    after = paged.after,
                    "paged out to swap"
                );
                if host.epoch == epoch {
                    host.paged_out_bytes = moved;
                }
                self.snapshot.send_modify(|s| {
                    s.page_outs.done += 1;
                    s.page_outs.bytes += moved;
                });
            }
            Err(err) => {
                // A host woken meanwhile refuses ("not paused") or stops its page-out: nothing
                // lost, not a failure.
                if host.epoch == epoch {
                    warn!(host = %host.config.name, error = %err, "paging out to swap failed");
                    self.snapshot.send_modify(|s| s.page_outs.failed += 1);
                }
            }
        }
        self.touch(id);
    }
}
