//! The seam the surfaces plug into: what sits above the app (the admin API, the command line,
//! the AsyncAPI document, metrics, tracing) registers a [`Surface`] at link time, when its
//! feature is compiled in, and the app calls each at the points of its life below. The app
//! names none of them: a build without a surface's feature simply has no entry for it.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{App, Readiness};
use crate::core::config::Config;
use crate::core::error::Result;
use crate::flows::layer::{HandleLayer, PublishLayer, Watch};
use crate::flows::publish::Publisher;
use crate::flows::registry::{GroupPlan, Registry};
use crate::flows::status::GroupStatus;

/// A tracing layer for the app's default subscriber (eventkit installs it when the program
/// installed none).
pub(crate) type LogLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// What a surface adds to each group: layers around handling (the first outermost), and what
/// watches the group's consumer (statistics, status).
#[derive(Default)]
pub(crate) struct GroupParts {
    pub layers: Vec<Arc<dyn HandleLayer>>,
    pub watches: Vec<Arc<dyn Watch>>,
}

/// A part of eventkit above the app. Every hook has a default that does nothing.
pub(crate) trait Surface: Sync + 'static {
    /// Its name: the cargo feature that compiles it in.
    fn name(&self) -> &'static str;

    /// Where its layers go among the surfaces' (lower is outer).
    fn order(&self) -> u8 {
        100
    }

    /// Runs instead of the service when the command line asks for it (`PROGRAM dlq ...`); the
    /// future ends the process.
    fn command(&self, _args: &[String], _config: &Config, _registry: &Registry) -> Option<BoxFuture<'static, std::convert::Infallible>> {
        None
    }

    /// Prints what the command line asks for instead of running (`--asyncapi`); true when it did.
    fn prints(&self, _args: &[String], _app: &App) -> bool {
        false
    }

    /// A layer for the default subscriber (exporting spans).
    fn log_layer(&self, _service: &str) -> Option<LogLayer> {
        None
    }

    /// Layers around every publish (the first outermost).
    fn publish_layers(&self) -> Vec<Arc<dyn PublishLayer>> {
        Vec::new()
    }

    /// What it adds to a group's consumer.
    fn group(&self, _plan: &GroupPlan) -> GroupParts {
        GroupParts::default()
    }

    /// Starts with the app, before the app waits for its cluster (probes answer meanwhile).
    fn start(&self, _config: &Config, _registry: &Registry, _ready: &Readiness) -> BoxFuture<'static, Result<Option<Box<dyn Attached>>>> {
        Box::pin(async { Ok(None) })
    }

    /// The app started: its publisher and groups run.
    fn started(&self, _config: &Config) {}

    /// The app stopped (on a blocking thread: may wait, briefly).
    fn stopped(&self) {}
}

/// A surface that runs beside a started app (a server).
pub(crate) trait Attached: Send + Sync {
    /// The app runs: its publisher, groups, and operators' control of them.
    fn live(&self, _publisher: &Publisher, _groups: &[Arc<GroupStatus>], _control: &crate::flows::control::Control, _fleet: &crate::app::fleet::Fleet) {}

    /// Where the admin API listens, if this is it.
    fn admin_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Where the health probes listen, if this serves them.
    fn health_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Stops, within `deadline`.
    fn stop(self: Box<Self>, deadline: tokio::time::Instant) -> BoxFuture<'static, ()>;
}

/// A surface's entry, submitted by its module (`inventory::submit!`).
pub(crate) struct Entry(pub &'static dyn Surface);

inventory::collect!(Entry);

/// The surfaces compiled in, in order.
pub(crate) fn all() -> Vec<&'static dyn Surface> {
    let mut all: Vec<&'static dyn Surface> = inventory::iter::<Entry>.into_iter().map(|e| e.0).collect();
    all.sort_by_key(|s| (s.order(), s.name()));
    all
}

/// Whether the surface named `name` is compiled in.
pub(crate) fn has(name: &str) -> bool {
    all().iter().any(|s| s.name() == name)
}

/// The error for a surface asked for (`what`) in a build without its feature.
fn missing(what: &str, feature: &str) -> crate::core::error::Error {
    crate::core::error::Error::Config(format!(
        "{what} needs eventkit's `{feature}` feature, which this build leaves out: \
         add it to the dependency (`eventkit = {{ package = \"eventkit-kafka\", features = [\"{feature}\"] }}`, or `full`)"
    ))
}

/// A configuration that asks for a surface this build leaves out is an error naming its
/// feature (instead of a setting silently ignored).
pub(crate) fn check_asked_for(config: &Config) -> Result<()> {
    if config.admin.addr.is_some() && !has("admin") {
        return Err(missing("EVENTKIT_ADMIN_ADDR (the admin API)", "admin"));
    }
    if config.admin.health_addr.is_some() && !has("admin") {
        return Err(missing("EVENTKIT_HEALTH_ADDR (the health probes)", "admin"));
    }
    Ok(())
}

/// A command line that asks for a surface this build leaves out is an error naming its feature.
pub(crate) fn check_command_line(args: &[String]) -> Result<()> {
    if args.iter().skip(1).any(|a| a == "--asyncapi") && !has("asyncapi") {
        return Err(missing("`--asyncapi`", "asyncapi"));
    }
    if args.get(1).is_some_and(|a| a == "dlq") && !has("cli") {
        return Err(missing("`dlq` (the dead letter tool)", "cli"));
    }
    if args.get(1).is_some_and(|a| a == "groups") && !has("cli") {
        return Err(missing("`groups` (pausing and resuming consumer groups)", "cli"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each surface compiled in has its entry; one left out is an error naming its feature
    /// when asked for (whichever features this test is built with: CI runs it with none).
    #[test]
    fn a_surface_left_out_is_an_error_naming_its_feature() {
        assert_eq!(has("admin"), cfg!(feature = "admin"));
        assert_eq!(has("asyncapi"), cfg!(feature = "asyncapi"));
        assert_eq!(has("cli"), cfg!(feature = "cli"));
        assert_eq!(has("metrics"), cfg!(feature = "metrics"));
        assert!(has("tracing"), "tracing is always there");

        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let asyncapi = check_command_line(&args(&["svc", "--asyncapi"]));
        let dlq = check_command_line(&args(&["svc", "dlq", "list", "--topic", "t"]));
        if cfg!(feature = "asyncapi") {
            assert!(asyncapi.is_ok());
        } else {
            let e = asyncapi.unwrap_err().to_string();
            assert!(e.contains("`--asyncapi`") && e.contains("`asyncapi` feature"), "{e}");
        }
        if cfg!(feature = "cli") {
            assert!(dlq.is_ok());
        } else {
            let e = dlq.unwrap_err().to_string();
            assert!(e.contains("`dlq`") && e.contains("`cli` feature"), "{e}");
        }
        assert!(check_command_line(&args(&["svc"])).is_ok());

        let built = crate::App::builder().bootstrap_servers("127.0.0.1:9").admin_addr("127.0.0.1:0").build();
        if cfg!(feature = "admin") {
            assert!(built.is_ok(), "{:?}", built.err());
        } else {
            let e = built.unwrap_err().to_string();
            assert!(e.contains("EVENTKIT_ADMIN_ADDR") && e.contains("`admin` feature"), "{e}");
        }
    }
}
