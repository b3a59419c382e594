//! Cascading: events a handler returns (or adds through its [`Context`]) are published once it
//! succeeds, as follow-ups of the event it handled; domain events go through their
//! `#[maps_to]` mapping first.
//!
//! A Kafka handler's record is settled only after every cascaded event is acknowledged
//! (at-least-once consume → produce): if publishing fails, the record is retried, handler
//! included. If the handler fails, nothing it cascaded is published.
//!
//! ```
//! use eventkit::{integration_event, maps_to, Cascade};
//!
//! #[integration_event(topic = "users.registered.v1", key = user_id)]
//! pub struct UserRegistered { pub user_id: u64, pub email: String }
//!
//! #[maps_to(UserRegistered)]
//! pub struct UserSignedUp { pub user_id: u64, pub email: String }
//!
//! let cascade = Cascade::new().with(UserSignedUp { user_id: 7, email: "a@b.c".into() });
//! assert_eq!(cascade.event_types(), ["UserRegistered"]);
//! ```
//!
//! [`Context`]: crate::Context

use std::any::Any;

use crate::core::error::Result;
use crate::core::event::{EventInfo, IntegrationEvent};
use crate::flows::publish::{PublishOptions, Published, Publisher};

/// What a handler can return (inside `Result<_, E>`) or pass to [`crate::Context::cascade`]
/// to have events published: an integration event, a domain event with a `#[maps_to]`
/// mapping, a [`Cascade`], `()`, and `Vec`s, `Option`s and tuples of these.
///
/// `#[integration_event]` and `#[maps_to]` implement it for their types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither an integration event nor a mapped domain event",
    label = "cannot be published as a cascade",
    note = "annotate the type with `#[eventkit::integration_event(...)]`, or map it with `#[eventkit::maps_to(SomeIntegrationEvent)]`"
)]
pub trait IntoEvents {
    /// Adds the integration events this value stands for to `cascade`.
    fn into_events(self, cascade: &mut Cascade);
}

/// A domain event: an in-process fact that is not published itself, but mapped into one or
/// more integration events. Implemented by `#[maps_to]`.
pub trait DomainEvent: Send + 'static {
    /// The integration events this domain event maps to.
    const TARGETS: &'static [&'static EventInfo];

    /// The integration events this domain event maps to, mapped.
    fn integration_events(&self) -> Cascade;
}

/// The mapping of a domain event into one integration event type. `#[maps_to(T)]`
/// implements `MapsTo<T>`; call it to test a mapping.
pub trait MapsTo<T> {
    /// Builds the integration event.
    fn map_to(&self) -> T;
}

/// A `#[maps_to]` mapping, collected at link time for the topic listing.
#[derive(Debug)]
pub struct MappingDescriptor {
    /// The domain event's Rust type name.
    pub domain: &'static str,
    /// The module that declares it.
    pub module: &'static str,
    /// The integration events it maps to.
    pub targets: &'static [&'static EventInfo],
}

inventory::collect!(MappingDescriptor);

/// Integration events to publish together, in order.
#[derive(Default)]
pub struct Cascade {
    /// Events, each with the options it was given (a command's follow-ups), if any.
    events: Vec<(Box<dyn Pending>, Option<PublishOptions>)>,
    /// A command handler's value, on its way back to the sender.
    pub(crate) reply: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Cascade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.event_types()).finish()
    }
}

impl Cascade {
    /// An empty cascade.
    pub fn new() -> Self {
        Cascade::default()
    }

    /// Adds events (an integration event, a mapped domain event, or a collection of them).
    pub fn with(mut self, events: impl IntoEvents) -> Self {
        events.into_events(&mut self);
        self
    }

    /// Adds events in place.
    pub fn push(&mut self, events: impl IntoEvents) {
        events.into_events(self);
    }

    /// Adds one integration event (also for types that implement [`IntegrationEvent`] by hand).
    pub fn push_event<E: IntegrationEvent>(&mut self, event: E) {
        self.events.push((Box::new(event), None));
    }

    /// Adds every event of `other`, after those already here.
    pub fn append(&mut self, mut other: Cascade) {
        self.events.append(&mut other.events);
    }

    /// How many integration events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The CloudEvents types of its events, in order.
    pub fn event_types(&self) -> Vec<&'static str> {
        self.events.iter().map(|(e, _)| e.info().event_type).collect()
    }

    /// The events of type `E`, in order.
    pub fn events_of<E: IntegrationEvent>(&self) -> Vec<&E> {
        self.events.iter().filter_map(|(e, _)| e.as_any().downcast_ref::<E>()).collect()
    }

    /// Encodes every event for the wire (topic and record), in order.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn encode(&self, publisher: &Publisher, options: &PublishOptions) -> Result<Vec<(String, crate::flows::publish::Outgoing)>> {
        self.events
            .iter()
            .map(|(e, own)| {
                let mut options = own.clone().unwrap_or_else(|| options.clone());
                options.id = None;
                e.encode(publisher, options)
            })
            .collect()
    }

    /// Publishes every event with `options` (ids are generated per event), pipelined, and
    /// waits for every acknowledgement.
    ///
    /// The records are handed to the producer one after the other, in order (it keeps that
    /// order per partition), and the acks are awaited after.
    pub async fn publish(self, publisher: &Publisher, options: PublishOptions) -> Result<Vec<Published>> {
        let mut sent = Vec::with_capacity(self.events.len());
        for (event, own) in &self.events {
            let mut options = own.clone().unwrap_or_else(|| options.clone());
            options.id = None;
            let (topic, out) = event.encode_now(publisher, options)?;
            let delivery = publisher.send_event(&topic, out).await?;
            sent.push((topic, delivery));
        }
        let mut published = Vec::with_capacity(sent.len());
        for (topic, delivery) in sent {
            let (event_id, partition, offset) = publisher.acked_event(&topic, delivery).await?;
            published.push(Published { event_id, topic, partition, offset });
        }
        Ok(published)
    }

    /// The same events, each to be published with `options` (unless it has its own): a
    /// command's events, handed to the handler that sent it.
    pub(crate) fn into_follow_ups(self, options: PublishOptions) -> Cascade {
        let events = self.events.into_iter().map(|(e, own)| (e, Some(own.unwrap_or_else(|| options.clone())))).collect();
        Cascade { events, reply: self.reply }
    }
}

/// An integration event waiting in a cascade, its type erased.
trait Pending: Send + Sync {
    fn info(&self) -> &'static EventInfo;
    fn as_any(&self) -> &dyn Any;
    /// Encodes the event to stage it in an outbox (the publish layers' `before` runs now).
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    fn encode(&self, publisher: &Publisher, options: PublishOptions) -> Result<(String, crate::flows::publish::Outgoing)>;
    /// Encodes the event to publish it now.
    fn encode_now(&self, publisher: &Publisher, options: PublishOptions) -> Result<(String, crate::flows::publish::Outgoing)>;
}

impl<E: IntegrationEvent> Pending for E {
    fn info(&self) -> &'static EventInfo {
        &E::INFO
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self, publisher: &Publisher, options: PublishOptions) -> Result<(String, crate::flows::publish::Outgoing)> {
        publisher.encode_record(self, options)
    }
    fn encode_now(&self, publisher: &Publisher, options: PublishOptions) -> Result<(String, crate::flows::publish::Outgoing)> {
        publisher.encode_event(self, options)
    }
}

impl Pending for crate::core::event::JsonEvent {
    fn info(&self) -> &'static EventInfo {
        self.info
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self, publisher: &Publisher, options: PublishOptions) -> Result<(String, crate::flows::publish::Outgoing)> {
        publisher.stage_json(self, options)
    }
    fn encode_now(&self, publisher: &Publisher, options: PublishOptions) -> Result<(String, crate::flows::publish::Outgoing)> {
        publisher.encode_json(self, options)
    }
}

/// An event decoded from JSON by its type name.
impl IntoEvents for crate::core::event::JsonEvent {
    fn into_events(self, cascade: &mut Cascade) {
        cascade.events.push((Box::new(self), None));
    }
}

impl IntoEvents for () {
    fn into_events(self, _: &mut Cascade) {}
}

impl IntoEvents for Cascade {
    fn into_events(self, cascade: &mut Cascade) {
        cascade.append(self);
    }
}

impl<T: IntoEvents> IntoEvents for Vec<T> {
    fn into_events(self, cascade: &mut Cascade) {
        for item in self {
            item.into_events(cascade);
        }
    }
}

impl<T: IntoEvents> IntoEvents for Option<T> {
    fn into_events(self, cascade: &mut Cascade) {
        if let Some(item) = self {
            item.into_events(cascade);
        }
    }
}

macro_rules! tuples {
    ($(($($t:ident),+)),+) => {$(
        impl<$($t: IntoEvents),+> IntoEvents for ($($t,)+) {
            #[allow(non_snake_case)]
            fn into_events(self, cascade: &mut Cascade) {
                let ($($t,)+) = self;
                $($t.into_events(cascade);)+
            }
        }
    )+};
}

tuples!((A), (A, B), (A, B, C), (A, B, C, D), (A, B, C, D, F));

/// A domain event's integration events (generated code of `#[maps_to]`).
#[doc(hidden)]
pub fn map_into<D: MapsTo<T>, T: IntegrationEvent>(domain: &D, cascade: &mut Cascade) {
    cascade.push_event(domain.map_to());
}

/// A `#[map(path::To::Target)]` rule, matched by name to a target of `#[maps_to(...)]` that is
/// written with another path, names that same type (generated code of `#[maps_to]`).
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the target `{T}` this `#[map]` rule was matched to by name",
    label = "not the type `#[maps_to(...)]` names",
    note = "a `#[map]` rule names one of the targets of `#[maps_to(...)]`: write its path as there, or its name alone"
)]
pub trait SameTarget<T: ?Sized> {
    /// Named by generated code (`<Rule as SameTarget<Target>>::OK`): the reference is the check.
    const OK: () = ();
}

impl<T: ?Sized> SameTarget<T> for T {}

impl Publisher {
    /// Publishes events (integration events, `#[maps_to]` domain events, a [`Cascade`],
    /// or collections of them) with `options`, pipelined, and waits for every acknowledgement.
    pub async fn publish_events(&self, events: impl IntoEvents, options: PublishOptions) -> Result<Vec<Published>> {
        Cascade::new().with(events).publish(self, options).await
    }
}
