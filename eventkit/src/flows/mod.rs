//! Layer 3, the two flows: publishing an event ([`publish`], [`cascade`], [`command`]) and
//! consuming records ([`consume`], the engine; [`dlq`], the dead letter queue), with what a
//! handler sees ([`context`], [`extract`], [`handler`], [`batch`], [`any`]), the handler table
//! ([`registry`]), what each group is doing ([`status`]) and the seam the layers plug into
//! ([`layer`]). The flows call "the stack" of layers and never a named concern.

pub mod any;
pub mod batch;
pub mod cascade;
pub mod command;
pub(crate) mod consume;
pub mod context;
pub mod control;
pub mod dlq;
pub mod extract;
pub mod handler;
pub mod layer;
pub mod publish;
pub mod registry;
pub mod replay;
pub(crate) mod status;
