//! Commands (the mediator): in-process requests, each handled by exactly one `#[handler]`
//! function in the same process, which returns its value to the sender.
//!
//! A command is not a Kafka record. It runs where it is sent, with the same extractors as event
//! handlers (app state, [`Publisher`], custom [`crate::FromContext`] types). Events its handler
//! adds with [`Context::cascade`] are published, as follow-ups of the command, once it
//! succeeded and before [`send`] returns; if it fails, nothing is published.
//!
//! ```no_run
//! use eventkit::{command, handler, Context};
//!
//! #[command(returns = u64)]
//! pub struct RegisterUser { pub email: String }
//!
//! #[handler]
//! async fn register(cmd: RegisterUser, ctx: &Context) -> eventkit::Result<u64> {
//!     Ok(cmd.email.len() as u64)
//! }
//!
//! # async fn demo() -> eventkit::Result<()> {
//! let id = eventkit::send(RegisterUser { email: "a@b.c".into() }).await?;
//! # Ok(()) }
//! ```

use std::any::{Any, TypeId};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock};

use futures::FutureExt;

use crate::flows::cascade::Cascade;
use crate::flows::context::{Context, RecordInfo};
use crate::core::envelope::Metadata;
use crate::core::error::{Error, Result};
use crate::flows::handler::{HandlerError, HandlerKind};
use crate::flows::publish::Publisher;
use crate::flows::registry::Registry;
use crate::core::state::StateMap;
use crate::wire::WireFormat;

/// Static facts about a command type.
#[derive(Debug, Clone, Copy)]
pub struct CommandInfo {
    /// The Rust type name.
    pub rust_name: &'static str,
    /// The module that declares it.
    pub module: &'static str,
    /// The Rust type's identity.
    pub type_id: fn() -> TypeId,
    /// The Rust type's full name.
    pub type_name: fn() -> &'static str,
}

impl PartialEq for CommandInfo {
    fn eq(&self, other: &Self) -> bool {
        (self.type_id)() == (other.type_id)()
    }
}

/// An in-process command. Implemented by `#[command]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a command",
    label = "not a command",
    note = "annotate the type with `#[eventkit::command]` (`#[eventkit::command(returns = T)]` when its handler returns a value)"
)]
pub trait Command: Send + 'static {
    /// What its handler returns to the sender.
    type Output: Send + 'static;
    /// Its static facts.
    const INFO: CommandInfo;
}

/// A command type registered by `#[command]`, collected at link time (a command without a
/// handler is a startup error).
#[derive(Debug)]
pub struct CommandDescriptor {
    /// The command's static facts.
    pub info: &'static CommandInfo,
}

inventory::collect!(CommandDescriptor);

/// Marks what a handler returns to: the consumer (events) or a command's sender (`T`).
#[doc(hidden)]
pub struct CommandReply<T>(std::marker::PhantomData<T>);

/// What a command needs to run: the app's registry, publisher and state.
#[derive(Clone)]
pub(crate) struct Mediator {
    pub registry: Registry,
    pub publisher: Publisher,
    pub state: Arc<StateMap>,
}

/// The mediator of the app started last, for [`send`].
static CURRENT: RwLock<Option<Mediator>> = RwLock::new(None);

pub(crate) fn set_current(mediator: Option<Mediator>) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = mediator;
}

/// Clears the current mediator if it is the one of `publisher`'s app.
pub(crate) fn clear_current(publisher: &Publisher) {
    let mut current = CURRENT.write().unwrap_or_else(|e| e.into_inner());
    if current.as_ref().is_some_and(|m| m.publisher.same_as(publisher)) {
        *current = None;
    }
}

/// Sends a command to its handler in the running app and returns the handler's value.
///
/// Inside a handler, prefer [`Context::send`]: the command then continues the handled event's
/// correlation. Errors: no app is running, the command has no handler, or the handler failed.
pub async fn send<C: Command>(command: C) -> Result<C::Output> {
    let mediator = CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone();
    let mediator = mediator.ok_or_else(|| Error::Config("no eventkit app is running: start one before sending commands".into()))?;
    mediator.send(command, None).await
}

impl Mediator {
    pub(crate) async fn send<C: Command>(&self, command: C, parent: Option<&Context>) -> Result<C::Output> {
        self.send_as(command, parent, None).await
    }

    /// [`Mediator::send`], with the command's id (and so a root command's correlation) given.
    pub(crate) async fn send_as<C: Command>(&self, command: C, parent: Option<&Context>, id: Option<String>) -> Result<C::Output> {
        let info = &C::INFO;
        let handler = self
            .registry
            .command_handler(info)
            .ok_or_else(|| Error::Config(format!("command `{}` has no handler in this app", (info.type_name)())))?;
        let HandlerKind::Command { call, .. } = handler.kind else { unreachable!("a command handler") };
        let mut metadata = Metadata::new(info.rust_name, self.publisher.source().to_owned());
        metadata.id = id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        match parent {
            Some(parent) => {
                let follow = parent.follow_up();
                metadata.correlation_id = follow.correlation_id;
                metadata.causation_id = follow.causation_id;
                metadata.tenant_id = follow.tenant_id;
            }
            None => metadata.correlation_id = Some(metadata.id.clone()),
        }
        let ctx = Arc::new(Context {
            metadata,
            record: RecordInfo { topic: "".into(), partition: -1, offset: -1, key: None, timestamp_ms: None },
            group: "".into(),
            data: Default::default(),
            format: WireFormat::Binary,
            // Sent from a handler: its publisher (a transactional group's producer, say).
            publisher: parent.map_or_else(|| self.publisher.clone(), |p| p.publisher.clone()),
            state: self.state.clone(),
            cascade: Default::default(),
        extensions: Default::default(),
            command: Mutex::new(Some(Box::new(command))),
            mediator: Some(Arc::new(self.clone())),
            handler: Some(handler.name),
        });
        let failed = |source: HandlerError| Error::Command { command: info.rust_name, handler: handler.name, source: Box::new(source) };
        let mut returned = match AssertUnwindSafe(call(ctx.clone())).catch_unwind().await {
            Ok(Ok(returned)) => returned,
            Ok(Err(e)) => return Err(failed(e)),
            Err(panic) => return Err(failed(HandlerError::Panicked(crate::core::error::panic_message(&*panic)))),
        };
        let reply = returned.reply.take();
        let mut cascade = ctx.take_cascade();
        cascade.append(returned);
        if !cascade.is_empty() {
            match parent {
                // Sent from a handler: the command's events go out with the handler's cascade,
                // once the handler succeeded (and never if it fails). They follow the command.
                Some(parent) => {
                    let records = cascade.into_follow_ups(ctx.follow_up());
                    parent.cascade(records);
                }
                None => {
                    cascade.publish(&self.publisher, ctx.follow_up()).await.map_err(|e| failed(HandlerError::Cascade(e)))?;
                }
            }
        }
        let reply = reply.and_then(|r| r.downcast::<C::Output>().ok()).ok_or_else(|| failed(HandlerError::Failed("the handler returned no value".into())))?;
        Ok(*reply)
    }
}

/// Takes the command out of its context (generated code).
#[doc(hidden)]
pub fn take_command<C: Command>(ctx: &Context) -> std::result::Result<C, HandlerError> {
    let taken = ctx.command.lock().unwrap_or_else(|e| e.into_inner()).take();
    match taken.map(|c| c.downcast::<C>()) {
        Some(Ok(c)) => Ok(*c),
        _ => Err(HandlerError::Failed(format!("no `{}` command to handle", std::any::type_name::<C>()).into())),
    }
}

/// A command handler's value, carried back to the sender through the cascade.
pub(crate) fn reply<T: Send + 'static>(value: T) -> Cascade {
    let mut cascade = Cascade::default();
    cascade.reply = Some(Box::new(value) as Box<dyn Any + Send>);
    cascade
}
