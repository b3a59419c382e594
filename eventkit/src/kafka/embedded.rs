//! The embedded broker: librdkafka's in-process mock cluster, speaking the real Kafka
//! protocol on 127.0.0.1, so that apps, examples and tests run without a Kafka installation.
//!
//! Limits: no CreateTopics admin API (eventkit creates topics through the mock API),
//! transactions are not enforced, and each partition keeps about 5 MiB.

use std::sync::mpsc;
use std::thread;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::producer::{BaseProducer, Producer as _};

use crate::core::error::{Error, Result};

/// The id of the mock cluster's only broker.
const BROKER_ID: i32 = 1;

enum Command {
    CreateTopic(String, i32, mpsc::Sender<Result<()>>),
    SetDown(bool, mpsc::Sender<Result<()>>),
    FailRequests(rdkafka::types::RDKafkaApiKey, Vec<rdkafka::types::RDKafkaRespErr>, mpsc::Sender<Result<()>>),
}

/// A running embedded broker; it stops when dropped.
///
/// ```
/// let broker = eventkit::EmbeddedBroker::start().unwrap();
/// assert!(broker.bootstrap_servers().starts_with("127.0.0.1:"));
/// broker.create_topic("orders", 3).unwrap();
/// ```
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster on 127.0.0.1.
    pub fn start() -> Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands_tx, commands_rx) = mpsc::channel::<Command>();
        // The mock cluster is not Send: it lives on its own thread until the handle drops.
        let thread = thread::Builder::new()
            .name("eventkit-embedded-broker".into())
            .spawn(move || {
                // The cluster belongs to a client made for it (`test.mock.num.brokers`), which
                // gives the raw handle for the settings rust-rdkafka does not wrap.
                let owner: BaseProducer = match ClientConfig::new().set("test.mock.num.brokers", "1").set_log_level(RDKafkaLogLevel::Error).create() {
                    Ok(owner) => owner,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::from(e)));
                        return;
                    }
                };
                let Some(cluster) = owner.client().mock_cluster() else {
                    let _ = ready_tx.send(Err(Error::Config("librdkafka made no mock cluster".into())));
                    return;
                };
                // A real broker waits `group.initial.rebalance.delay.ms` (3 s in the mock) for
                // more members before the first assignment of a new group; an in-process
                // broker's groups start together, so it waits for nobody: an app (and every
                // `TestApp`) gets its partitions as soon as it joins.
                // SAFETY: the handle is the live mock cluster of `owner`, which outlives this call.
                unsafe {
                    let handle = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
                    if !handle.is_null() {
                        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(handle, 0);
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for command in commands_rx {
                    match command {
                        Command::CreateTopic(name, partitions, reply) => {
                            let _ = reply.send(cluster.create_topic(&name, partitions, 1).map_err(Error::from));
                        }
                        Command::FailRequests(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        Command::SetDown(down, reply) => {
                            let done = if down { cluster.broker_down(BROKER_ID) } else { cluster.broker_up(BROKER_ID) };
                            let _ = reply.send(done.map_err(Error::from));
                        }
                    }
                }
            })?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| Error::Config("embedded broker thread exited".into()))??;
        Ok(EmbeddedBroker { bootstrap, commands: Some(commands_tx), thread: Some(thread) })
    }

    /// The broker's address, for `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Creates a topic (the mock broker has no CreateTopics API). Creating an existing
    /// topic again is not an error.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        match self.command(|reply| Command::CreateTopic(name.to_owned(), partitions, reply)) {
            Err(Error::Kafka(e)) if e.to_string().contains("already exists") => Ok(()),
            other => other,
        }
    }

    /// Simulates an outage: with `down`, the broker drops its connections and refuses new
    /// ones (its data stays) until it is set up again. For testing how an app rides one out.
    pub fn set_down(&self, down: bool) -> Result<()> {
        self.command(|reply| Command::SetDown(down, reply))
    }

    /// Makes the broker answer the next requests of kind `api` with `errors`, one each, in
    /// order (librdkafka's mock error injection), for fault-injection tests:
    /// `broker.fail_requests(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER])`.
    pub fn fail_requests(&self, api: rdkafka::types::RDKafkaApiKey, errors: &[rdkafka::types::RDKafkaRespErr]) -> Result<()> {
        let errors = errors.to_vec();
        self.command(|reply| Command::FailRequests(api, errors, reply))
    }

    fn command(&self, command: impl FnOnce(mpsc::Sender<Result<()>>) -> Command) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        let commands = self.commands.as_ref().expect("broker running");
        commands.send(command(tx)).map_err(|_| Error::Config("embedded broker stopped".into()))?;
        rx.recv().map_err(|_| Error::Config("embedded broker stopped".into()))?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
