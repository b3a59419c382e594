//! Layer 5, the surfaces: what sits on top of an app and uses it. The admin HTTP API
//! ([`admin`]), the command line ([`cli`]), the AsyncAPI document ([`asyncapi`]), the outbox and
//! inbox ([`outbox`]), the test harness ([`testing`]), tracing and OpenTelemetry ([`trace`]),
//! metrics for Prometheus ([`metrics`]). Each is a layer around the flows, or plugs into the app
//! through [`crate::app::surface`]; nothing below names them.

#[cfg(feature = "admin")]
pub(crate) mod admin;
#[cfg(feature = "asyncapi")]
pub mod asyncapi;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod outbox;
pub mod testing;
pub(crate) mod trace;
