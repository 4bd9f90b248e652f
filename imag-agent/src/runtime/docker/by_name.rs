//! What the Docker runtime remembers per container (or host) name, shared by every clone of a
//! [`Docker`](super::Docker) handle: the hosts' container IDs (`identity.rs`), the freezers of
//! paused containers and those thawed directly (`thaw.rs`), the memory cgroups paged out
//! (`page_out.rs`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

/// A map by name behind one lock, shared by its clones.
pub(super) struct ByName<V>(Arc<Mutex<HashMap<String, V>>>);

impl<V> Clone for ByName<V> {
    fn clone(&self) -> Self {
        ByName(Arc::clone(&self.0))
    }
}

impl<V> Default for ByName<V> {
    fn default() -> Self {
        ByName(Arc::default())
    }
}

impl<V> ByName<V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, V>> {
        self.0.lock().expect("not poisoned")
    }

    pub(super) fn insert(&self, name: &str, value: V) {
        self.lock().insert(name.to_string(), value);
    }

    pub(super) fn remove(&self, name: &str) -> Option<V> {
        self.lock().remove(name)
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Removes `name`'s entry if `remove` says so of its value.
    pub(super) fn remove_if(&self, name: &str, remove: impl FnOnce(&V) -> bool) {
        let mut map = self.lock();
        if map.get(name).is_some_and(remove) {
            map.remove(name);
        }
    }
}

impl<V: Clone> ByName<V> {
    pub(super) fn get(&self, name: &str) -> Option<V> {
        self.lock().get(name).cloned()
    }

    /// `name`'s value, made by `make` and kept if there was none.
    pub(super) fn get_or_insert_with(&self, name: &str, make: impl FnOnce() -> V) -> V {
        (self.lock().entry(name.to_string()))
            .or_insert_with(make)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::ByName;

    #[test]
    fn clones_share_one_map() {
        let a: ByName<u32> = ByName::default();
        let b = a.clone();
        a.insert("web", 1);
        assert_eq!(b.get("web"), Some(1));
        assert!(b.contains("web"));
        b.remove_if("web", |v| *v == 2);
        assert_eq!(a.get("web"), Some(1), "kept: the predicate said no");
        b.remove_if("web", |v| *v == 1);
        assert_eq!(a.remove("web"), None);
        assert_eq!(a.get_or_insert_with("db", || 3), 3);
        assert_eq!(b.get_or_insert_with("db", || 4), 3, "kept: there was one");
    }
}
