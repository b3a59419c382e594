//! Application state handed to handlers, keyed by type.

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Values registered with [`crate::AppBuilder::state`], one per type.
#[derive(Default, Clone)]
pub struct StateMap {
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` (builder style), for [`crate::run_with`].
    ///
    /// ```
    /// #[derive(Clone)] struct Pool;
    /// let state = eventkit::StateMap::new().with(Pool).with(42u32);
    /// assert_eq!(state.get::<u32>(), Some(&42));
    /// ```
    pub fn with<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    /// Registers `value`, replacing an earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), (Arc::new(value), std::any::type_name::<T>()));
    }

    /// The value of type `T`, if registered.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|(v, _)| v.downcast_ref())
    }

    /// Whether a value of the given type is registered.
    pub fn contains(&self, id: TypeId) -> bool {
        self.values.contains_key(&id)
    }

    /// Names of the registered types.
    pub fn type_names(&self) -> BTreeSet<&'static str> {
        self.values.values().map(|(_, n)| *n).collect()
    }
}

impl std::fmt::Debug for StateMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.type_names()).finish()
    }
}

/// What a handler needs from the app, collected from its arguments at link time so that a
/// missing state is a startup error rather than a failure on the first message.
#[derive(Debug, Default, Clone)]
pub struct Requirements {
    pub(crate) states: Vec<(TypeId, &'static str)>,
}

impl Requirements {
    /// Declares that the handler needs state of type `T`.
    pub fn state<T: Send + Sync + 'static>(&mut self) {
        let id = TypeId::of::<T>();
        if !self.states.iter().any(|(t, _)| *t == id) {
            self.states.push((id, std::any::type_name::<T>()));
        }
    }

    /// Names of the required state types.
    pub fn state_names(&self) -> Vec<&'static str> {
        self.states.iter().map(|(_, n)| *n).collect()
    }
}
