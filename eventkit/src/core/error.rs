//! Errors returned by eventkit and accepted from handlers.

/// A boxed error, as handlers may return any error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with eventkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rdkafka::error::KafkaError> for Error {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        Error::Kafka(redact(e))
    }
}

/// A client error without the value of a property that may not be shown (librdkafka's
/// configuration errors quote the value they refuse): one librdkafka marks sensitive, or one
/// it does not know or cannot take from a string (`EVENTKIT_KAFKA_SSL_KEY` holds a key).
pub(crate) fn redact(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(code, description, key, value) if !crate::core::properties::shows_value(&key) => {
            let description = if value.is_empty() { description } else { description.replace(&value, crate::core::properties::REDACTED) };
            rdkafka::error::KafkaError::ClientConfig(code, description, key, crate::core::properties::REDACTED.to_owned())
        }
        e => e,
    }
}

/// Everything that can go wrong in eventkit.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Kafka client reported an error.
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    /// Configuration is invalid or incomplete.
    #[error("configuration: {0}")]
    Config(String),
    /// A command or call was given arguments it cannot use (command lines exit with status 2).
    #[error("{0}")]
    Usage(String),
    /// What was asked for does not exist (a topic, a dead letter entry).
    #[error("{0}")]
    NotFound(String),
    /// What was asked for conflicts with what is under way (the same replay running).
    #[error("{0}")]
    Conflict(String),
    /// The cluster did not answer within the startup timeout.
    #[error("{0}")]
    Unreachable(String),
    /// The registered events and handlers are inconsistent.
    #[error("registry: {0}")]
    Registry(String),
    /// Handlers require state that was never registered on the app.
    #[error("missing state: {0}")]
    MissingState(String),
    /// An event could not be serialized or deserialized.
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    /// The record's envelope (headers or body) is malformed.
    #[error("envelope: {0}")]
    Envelope(String),
    /// Publishing did not complete.
    #[error("publish to `{topic}` failed: {source}")]
    Publish {
        /// The destination topic.
        topic: String,
        /// Why the broker or client refused it.
        source: rdkafka::error::KafkaError,
    },
    /// A database error (the outbox and the inbox).
    #[error("database: {0}")]
    Database(BoxError),
    /// A command's handler failed (or the events it cascaded could not be published).
    #[error("command `{command}` failed in handler `{handler}`: {source}")]
    Command {
        /// The command type.
        command: &'static str,
        /// The handler that ran it.
        handler: &'static str,
        /// Why it failed.
        #[source]
        source: Box<HandlerError>,
    },
    /// An I/O error (signals, files).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// An application error, e.g. from a handler.
    #[error(transparent)]
    Other(BoxError),
    /// A handler error that retrying cannot fix: the record goes straight to the dead
    /// letter queue.
    #[error("{0}")]
    Permanent(BoxError),
    /// A batch handler handled the first `succeeded` events and failed on the next one
    /// ([`Error::batch_failed_at`]).
    #[error("batch failed at event {succeeded}: {source}")]
    BatchFailedAt {
        /// Events handled before the failure.
        succeeded: usize,
        /// Why the next event failed.
        source: BoxError,
    },
}

/// `?` on `sqlx` calls in handlers and outbox code (features `sqlite`, `postgres`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(Box::new(e))
    }
}

/// Shows the message and its causes, so that `main` returning an error prints something a
/// person can act on (`Error: cannot reach Kafka at ...`), not a variant name.
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\n  caused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl Error {
    /// An application error with a message.
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error::Other(message.to_string().into())
    }

    /// A permanent failure: returned from a handler, the record is dead-lettered at once
    /// instead of being retried.
    ///
    /// ```
    /// let e = eventkit::Error::permanent("order total is negative");
    /// assert!(e.is_permanent());
    /// ```
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Error::Permanent(error.into())
    }

    /// Whether this is a [`Error::permanent`] failure.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Permanent(_))
    }

    /// Wraps any error as an application error.
    pub fn other(error: impl Into<BoxError>) -> Self {
        Error::Other(error.into())
    }
}

/// Why handling one message failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// The record's data does not decode as the handler's event type (a poison message).
    #[error("cannot decode event data: {0}")]
    Decode(#[source] serde_json::Error),
    /// An argument could not be extracted.
    #[error("cannot extract handler argument: {0}")]
    Extract(#[source] Error),
    /// The handler returned an error.
    #[error("handler failed: {0}")]
    Failed(#[source] BoxError),
    /// The handler returned a permanent error ([`Error::permanent`]).
    #[error("handler failed permanently: {0}")]
    Permanent(#[source] BoxError),
    /// A batch handler handled `succeeded` events and failed on the next.
    #[error("batch failed at event {succeeded}: {source}")]
    Partial {
        /// Events handled before the failure.
        succeeded: usize,
        /// Why the next event failed.
        #[source]
        source: BoxError,
    },
    /// Event `index` of a batch does not decode.
    #[error("cannot decode event {index} of the batch: {source}")]
    DecodeAt {
        /// The event's index in the batch.
        index: usize,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// The handler panicked.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// The handler succeeded, but the events it cascaded could not all be published; the
    /// record is handled again.
    #[error("publishing the handler's cascaded events failed: {0}")]
    Cascade(#[source] Error),
}

impl HandlerError {
    /// Whether the record itself is unusable (no handler can ever take it).
    pub fn is_poison(&self) -> bool {
        matches!(self, HandlerError::Decode(_))
    }

    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, HandlerError::Decode(_) | HandlerError::Permanent(_))
    }

    /// The error kind written to the dead letter queue's `eventkit-dlq-kind` header.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Decode(_) => kinds::DESERIALIZATION,
            HandlerError::Extract(_) => kinds::EXTRACT,
            HandlerError::Failed(_) | HandlerError::Partial { .. } | HandlerError::Cascade(_) => kinds::HANDLER_ERROR,
            HandlerError::DecodeAt { .. } => kinds::DESERIALIZATION,
            HandlerError::Permanent(_) => kinds::PERMANENT,
            HandlerError::Panicked(_) => kinds::PANIC,
        }
    }
}

/// Values of the `eventkit-dlq-kind` header.
pub mod kinds {
    /// A handler kept failing until its retries were exhausted.
    pub const HANDLER_ERROR: &str = "handler-error";
    /// A handler returned [`crate::Error::permanent`].
    pub const PERMANENT: &str = "permanent";
    /// A handler panicked on every attempt.
    pub const PANIC: &str = "panic";
    /// An argument of the handler could not be extracted.
    pub const EXTRACT: &str = "extract";
    /// The data does not decode as the event type.
    pub const DESERIALIZATION: &str = "deserialization";
    /// The event type is not registered in this app.
    pub const UNKNOWN_TYPE: &str = "unknown-type";
    /// The CloudEvents attributes or body envelope are malformed.
    pub const ENVELOPE: &str = "envelope";
    /// Listings only: a record in a dead letter topic that eventkit did not write (no
    /// `eventkit-dlq-topic` header). It cannot be replayed.
    pub const FOREIGN: &str = "foreign";
    /// Every kind, for filters.
    pub const ALL: [&str; 8] = [HANDLER_ERROR, PERMANENT, PANIC, EXTRACT, DESERIALIZATION, UNKNOWN_TYPE, ENVELOPE, FOREIGN];
}

/// What a panic said (its `&str` or `String` payload).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod redaction {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaConfRes;

    #[test]
    fn a_configuration_error_about_a_secret_property_does_not_quote_its_value() {
        let refused = KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_INVALID, "not supported".into(), "sasl.password".into(), "hunter2".into());
        let shown = super::Error::from(refused).to_string();
        assert!(!shown.contains("hunter2") && shown.contains("sasl.password") && shown.contains("<redacted>"), "{shown}");
        let other = KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_INVALID, "bad".into(), "linger.ms".into(), "-5".into());
        assert!(super::Error::from(other).to_string().contains("-5"), "other values still help");
    }
}
