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
        rdkafka::error::KafkaError::ClientConfig(code, description, key, value) if !crate::kafka::properties::shows_value(&key) => {
            let description = if value.is_empty() { description } else { description.replace(&value, crate::config::REDACTED) };
            rdkafka::error::KafkaError::ClientConfig(code, description, key, crate::config::REDACTED.to_owned())
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
        source: Box<crate::HandlerError>,
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
