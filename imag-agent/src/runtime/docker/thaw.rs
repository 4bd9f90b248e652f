//! Fast thaw, the Docker runtime's optional capability: wake a paused container by thawing its
//! cgroup freezer directly ([`Freezer`], microseconds) instead of the engine's unpause (tens of
//! milliseconds), and repair the engine's view of it later ("settle"), at a quiet moment. Its
//! neighbour `mod.rs` calls in here from wake, sleep and observe.

use bollard::{models::ContainerInspectResponse, query_parameters::InspectContainerOptions};

use super::{Docker, by_name::ByName, classify};
use crate::runtime::{ContainerSpec, RuntimeError, freezer::Freezer};

/// How long a refreeze waits for every task of the container to be frozen.
const REFREEZE_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// What fast thaw remembers, shared by every clone of a [`Docker`] handle.
#[derive(Clone, Default)]
pub(super) struct FastThaw {
    /// Wake paused containers by thawing their freezer directly.
    enabled: bool,
    /// Freezers of containers this agent paused, found when pausing (so that a wake needs no
    /// engine round trip to find them).
    freezers: ByName<Freezer>,
    /// Containers thawed directly: running, though the engine still says paused.
    unsettled: ByName<()>,
    /// One lock per container, held by a settle and by a sleep, so that the two never
    /// interleave ([`FastThaw::one_at_a_time`]).
    turns: ByName<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

impl FastThaw {
    pub(super) fn new(enabled: bool) -> FastThaw {
        FastThaw {
            enabled,
            ..FastThaw::default()
        }
    }

    pub(super) fn is_unsettled(&self, name: &str) -> bool {
        self.unsettled.contains(name)
    }

    pub(super) fn set_unsettled(&self, name: &str, unsettled: bool) {
        if unsettled {
            self.unsettled.insert(name, ());
        } else {
            self.unsettled.remove(name);
        }
    }

    /// Waits for the container's turn: a settle and a sleep of one container run one after the
    /// other. Interleaved, a settle's engine unpause could land after a sleep had frozen the
    /// container again: the container ran while the agent had it asleep, the engine agreed with
    /// neither, and every later wake was refused ("not paused") — seen in the trace bench, a
    /// host that went quiet for a second (the settle) and idle in the same breath (the sleep).
    pub(super) async fn one_at_a_time(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.turns
            .get_or_insert_with(name, std::sync::Arc::default)
            .lock_owned()
            .await
    }

    /// Drops the remembered freezer of a container that is being stopped or removed.
    pub(super) fn forget(&self, name: &str) {
        self.freezers.remove(name);
    }
}

/// What names an inspected container's cgroups: its ID (unique, never reused; a PID can be, by
/// an unrelated process once the container is gone) and the engine's cgroup parent, if set.
pub(super) fn cgroup_of(inspected: &ContainerInspectResponse) -> Option<(&str, Option<&str>)> {
    let id = inspected.id.as_deref()?;
    let parent = (inspected.host_config.as_ref()).and_then(|h| h.cgroup_parent.as_deref());
    Some((id, parent))
}

/// The freezer of an inspected container.
pub(super) fn freezer_of(inspected: &ContainerInspectResponse) -> Option<Freezer> {
    let (id, parent) = cgroup_of(inspected)?;
    Freezer::of_container(id, parent)
}

impl Docker {
    /// The freezer of the host's container: cached from when it was paused, else found from its
    /// ID.
    pub(super) async fn freezer(&self, spec: &ContainerSpec) -> Option<Freezer> {
        let name = &spec.name;
        if let Some(freezer) = self.thaw.freezers.get(name) {
            return Some(freezer);
        }
        let id = self.container_id(spec).await.ok()??;
        let inspected = self
            .client
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let freezer = freezer_of(&inspected)?;
        self.thaw.freezers.insert(name, freezer.clone());
        Some(freezer)
    }

    /// The fast path of a wake from pause: thaws the freezer ourselves and leaves the engine's
    /// view to be settled later. False (nothing done) when fast thaw is off, the container is
    /// already unsettled, or its freezer cannot be found or is not frozen.
    pub(super) async fn thaw_directly(&self, spec: &ContainerSpec) -> bool {
        let name = &spec.name;
        if !self.thaw.enabled || self.thaw.is_unsettled(name) {
            return false;
        }
        if let Some(freezer) = self.freezer(spec).await
            && freezer.is_frozen().unwrap_or(false)
            && freezer.thaw().is_ok()
        {
            self.thaw.set_unsettled(name, true);
            return true;
        }
        false
    }

    /// Puts an unsettled container back to sleep by freezing it again, which makes the engine's
    /// "paused" true once more. False if that failed (the caller settles and pauses instead).
    ///
    /// It reports success only once every task is frozen: cgroup v1 freezes asynchronously (the
    /// state reads `FREEZING` until then), and the engine's pause waits for `FROZEN` too. A host
    /// reported asleep while still freezing had its page-out (`swap_after`) refused ("not
    /// paused"), and could not be thawed directly.
    pub(super) async fn refreeze(&self, spec: &ContainerSpec) -> bool {
        let Some(freezer) = self.freezer(spec).await else {
            return false;
        };
        if freezer.freeze().is_err() {
            return false;
        }
        let deadline = std::time::Instant::now() + REFREEZE_WAIT;
        while !freezer.is_frozen().unwrap_or(false) {
            if std::time::Instant::now() >= deadline {
                // Left to the settle and the engine's pause, which thaw and freeze it anew.
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.thaw.set_unsettled(&spec.name, false);
        true
    }

    /// Repairs the engine's view of a container thawed directly: freeze it again (for the few
    /// milliseconds the engine needs), and let the engine unpause it; if that fails, thaw it
    /// ourselves again, so that the container is never left frozen. The caller holds the
    /// container's turn ([`FastThaw::one_at_a_time`]).
    pub(super) async fn settle_view(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        if !self.thaw.is_unsettled(&spec.name) {
            return Ok(());
        }
        let Some(freezer) = self.freezer(spec).await else {
            self.thaw.set_unsettled(&spec.name, false);
            return Ok(());
        };
        freezer.freeze().map_err(|e| RuntimeError::Engine {
            action: "freeze (to settle)",
            container: spec.name.clone(),
            message: e.to_string(),
        })?;
        let id = self.container_id(spec).await?.unwrap_or_default();
        let unpaused = self.client.unpause_container(&id).await;
        if unpaused.is_err() || freezer.is_frozen().unwrap_or(true) {
            let _ = freezer.thaw();
        }
        self.thaw.set_unsettled(&spec.name, false);
        unpaused.map_err(|e| classify(e, "unpause (to settle)", &spec.name))
    }
}
