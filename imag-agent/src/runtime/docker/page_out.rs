//! Page-out, the Docker runtime's optional capability (`swap_after`): the paused container's
//! memory cgroup, found from its ID, is reclaimed to swap by the kernel ([`MemoryCgroup`]). The
//! engine is asked only for the container's ID and cgroup parent; it never learns of it. On the
//! container's next wake its pages are read back ahead of the process ([`PagedOutGroups`]).

use bollard::query_parameters::InspectContainerOptions;

use super::{
    Docker,
    by_name::ByName,
    classify,
    thaw::{cgroup_of, freezer_of},
};
use crate::runtime::{ContainerSpec, PagedOut, RuntimeError, memory::MemoryCgroup};

impl Docker {
    pub(super) async fn page_out_paused(
        &self,
        spec: &ContainerSpec,
    ) -> Result<PagedOut, RuntimeError> {
        let refused = |message: String| RuntimeError::Engine {
            action: "page out",
            container: spec.name.clone(),
            message,
        };
        let id = (self.container_id(spec).await?)
            .ok_or_else(|| refused("the container no longer exists".into()))?;
        // One look at the container names both its cgroups.
        let inspected = self
            .client
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| classify(e, "inspect", &spec.name))?;
        // Only a frozen container: a running one would fault its pages straight back in (and a
        // wake during the page-out stops it).
        let Some(freezer) = freezer_of(&inspected).filter(|f| f.is_frozen().unwrap_or(false))
        else {
            return Err(refused("it is not paused".into()));
        };
        let group = cgroup_of(&inspected)
            .and_then(|(id, parent)| MemoryCgroup::of_container(id, parent))
            .ok_or_else(|| {
                refused(
                    "its memory cgroup is not under /sys/fs/cgroup (memory controller missing?)"
                        .into(),
                )
            })?;
        let woken = move || !freezer.is_frozen().unwrap_or(false);
        // Known before the reclaim starts: a wake in the middle of it reads back what already
        // went out.
        if spec.swap_prefetch {
            self.paged_out.insert(&spec.name, group.clone());
        }
        let paged = tokio::task::spawn_blocking(move || group.page_out(woken))
            .await
            .map_err(|e| refused(format!("the page-out task failed: {e}")))?
            .map_err(|e| refused(format!("reclaiming its memory cgroup failed: {e}")));
        if paged.is_err() {
            self.paged_out.forget(&spec.name);
        }
        paged
    }
}

/// Containers paged out since their last wake, by name, with their memory cgroups (shared by
/// the runtime's clones).
#[derive(Clone, Default)]
pub(super) struct PagedOutGroups(ByName<MemoryCgroup>);

impl PagedOutGroups {
    fn insert(&self, name: &str, group: MemoryCgroup) {
        self.0.insert(name, group);
    }

    pub(super) fn forget(&self, name: &str) {
        self.0.remove(name);
    }

    /// If container `name` was paged out since its last wake: starts reading its pages back
    /// (`MemoryCgroup::prefetch`, in a blocking task nobody waits for) and forgets it.
    pub(super) fn prefetch(&self, name: &str) {
        let Some(group) = self.0.remove(name) else {
            return;
        };
        let name = name.to_string();
        tokio::task::spawn_blocking(move || match group.prefetch() {
            Ok(bytes) => {
                tracing::debug!(container = %name, bytes, "reading its pages back from swap");
            }
            Err(err) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::warn!(container = %name, error = %err,
                        "cannot read a paged-out host's memory back as it wakes (process_madvise \
                         needs Linux 5.10 and CAP_SYS_NICE); its pages come back as it touches \
                         them (logged once)");
                });
            }
        });
    }
}
