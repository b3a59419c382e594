//! Where a running app's embedded broker can be found by the program's other commands: an app
//! that started the embedded broker writes `eventkit-SERVICE.broker` (its process id and the
//! broker's address) in the temporary directory, and removes it when it stops. `PROGRAM dlq ...`
//! run beside it, without `KAFKA_BOOTSTRAP_SERVERS`, reads it.

use std::path::PathBuf;

/// The file that tells where the running `service`'s embedded broker listens.
fn path(service: &str) -> PathBuf {
    let safe: String = service.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    std::env::temp_dir().join(format!("eventkit-{safe}.broker"))
}

/// The announcement of a running app's embedded broker; the file goes when this drops.
#[derive(Debug)]
pub(crate) struct Announced(PathBuf);

impl Drop for Announced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Says that `service`'s embedded broker listens at `bootstrap`, for as long as the result lives.
/// A file that cannot be written only costs the `dlq` command its hint.
pub(crate) fn announce(service: &str, bootstrap: &str) -> Option<Announced> {
    let path = path(service);
    match std::fs::write(&path, format!("{}\n{bootstrap}\n", std::process::id())) {
        Ok(()) => Some(Announced(path)),
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "cannot note where the embedded broker listens");
            None
        }
    }
}

/// A running app's embedded broker.
#[cfg_attr(not(feature = "cli"), allow(dead_code))] // read by the `dlq` command
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningBroker {
    /// The process that runs it.
    pub pid: u32,
    /// Its bootstrap servers.
    pub bootstrap: String,
}

/// The embedded broker of a running `service` on this machine, if one announced itself and its
/// process still runs.
#[cfg_attr(not(feature = "cli"), allow(dead_code))] // read by the `dlq` command
pub fn find(service: &str) -> Option<RunningBroker> {
    let text = std::fs::read_to_string(path(service)).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let bootstrap = lines.next()?.trim().to_owned();
    if bootstrap.is_empty() || pid == std::process::id() || !alive(pid) {
        return None;
    }
    Some(RunningBroker { pid, bootstrap })
}

/// Whether process `pid` runs (where the platform says; elsewhere assumed).
#[cfg_attr(not(feature = "cli"), allow(dead_code))] // read by the `dlq` command
fn alive(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_announced_broker_is_found_while_its_process_runs_and_forgotten_when_it_stops() {
        let service = format!("announce-test-{}", uuid::Uuid::now_v7());
        assert_eq!(find(&service), None);
        // This process's own announcement is not a broker "of a running app" for its commands,
        // so write one as another live process (the parent, pid 1 on a bare container) would.
        let other = std::os::unix::process::parent_id();
        std::fs::write(path(&service), format!("{other}\n127.0.0.1:4567\n")).unwrap();
        assert_eq!(find(&service), Some(RunningBroker { pid: other, bootstrap: "127.0.0.1:4567".into() }));
        // A process that is gone: the file is stale.
        std::fs::write(path(&service), "4000000000\n127.0.0.1:4567\n").unwrap();
        assert_eq!(find(&service), None);
        std::fs::remove_file(path(&service)).unwrap();

        let announced = announce(&service, "127.0.0.1:9").unwrap();
        assert!(path(&service).exists());
        assert_eq!(find(&service), None, "this process's own broker");
        drop(announced);
        assert!(!path(&service).exists(), "removed when the app stops");
    }

    #[test]
    fn a_service_name_cannot_leave_the_temporary_directory() {
        assert_eq!(path("../../etc/passwd").file_name().unwrap(), "eventkit-.._.._etc_passwd.broker");
        assert_eq!(path("../x").parent().unwrap(), std::env::temp_dir());
    }
}
