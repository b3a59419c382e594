//! Layer 0, core values: events, their metadata, errors and settings. Plain values that every
//! other layer uses; they name nothing above them.

pub mod config;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ordering;
pub(crate) mod properties;
pub mod retry;
pub mod state;
pub mod topic_settings;
