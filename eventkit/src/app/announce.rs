//! Where a running app's embedded broker can be found by the program's other commands. An app
//! that started the embedded broker writes a note (its process id and the broker's address) in a
//! directory of the user's own (`$XDG_RUNTIME_DIR/eventkit`, else `eventkit-UID` in the
//! temporary directory, mode 0700), one note per process, and removes it when it stops.
//! `PROGRAM dlq ...` run beside it, without `KAFKA_BOOTSTRAP_SERVERS`, reads the newest note of
//! a live process of that service whose address is on this machine.
//!
//! The directory is refused unless it is a real directory owned by the user and closed to
//! others, so another user can neither plant a note (an address to send replays to) nor point
//! one at a file of the user's (a symbolic link the write would follow).

use std::path::{Path, PathBuf};

/// The user's own directory for notes, created if missing; `None` when it cannot be trusted.
#[cfg(unix)]
fn directory() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(runtime) => PathBuf::from(runtime).join("eventkit"),
        None => std::env::temp_dir().join(format!("eventkit-{uid}")),
    };
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    // Not followed: a symbolic link in its place is refused.
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let trusted = meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0;
    if !trusted {
        tracing::debug!(dir = %dir.display(), "not noting where the embedded broker listens: the directory is not the user's own (mode 0700)");
        return None;
    }
    Some(dir)
}

#[cfg(not(unix))]
fn directory() -> Option<PathBuf> {
    None
}

/// The file-name stem of `service`'s notes: its name made safe, and a hash of it, so that
/// names that read the same once made safe (`a/b`, `a_b`) stay apart and long ones fit.
fn stem(service: &str) -> String {
    let safe: String = service.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    // FNV-1a: stable across builds and platforms.
    let hash = service.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{safe}-{hash:016x}")
}

/// The note of one process.
fn note(dir: &Path, service: &str, pid: u32) -> PathBuf {
    dir.join(format!("{}.{pid}.broker", stem(service)))
}

/// The announcement of a running app's embedded broker; its note goes when this drops.
#[derive(Debug)]
pub(crate) struct Announced(PathBuf);

impl Drop for Announced {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Notes that `service`'s embedded broker listens at `bootstrap`, for as long as the result
/// lives. A note that cannot be written only costs the `dlq` command its hint.
pub(crate) fn announce(service: &str, bootstrap: &str) -> Option<Announced> {
    let dir = directory()?;
    let path = note(&dir, service, std::process::id());
    // Written whole, then renamed into place: a reader never sees half a note.
    let partial = path.with_extension("partial");
    let written = std::fs::write(&partial, format!("{}\n{bootstrap}\n", std::process::id())).and_then(|()| std::fs::rename(&partial, &path));
    match written {
        Ok(()) => Some(Announced(path)),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
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

/// The embedded broker of a running `service` on this machine: the newest note of a live
/// process (other than this one) whose address is a loopback address. Notes of processes that
/// are gone (killed before they could remove them) are removed.
#[cfg_attr(not(feature = "cli"), allow(dead_code))] // read by the `dlq` command
pub fn find(service: &str) -> Option<RunningBroker> {
    let dir = directory()?;
    let prefix = format!("{}.", stem(service));
    let mut found: Vec<(std::time::SystemTime, RunningBroker)> = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".broker")).and_then(|pid| pid.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if !alive(pid) {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        let mut lines = text.lines();
        let (Some(noted_pid), Some(bootstrap)) = (lines.next(), lines.next()) else { continue };
        if noted_pid.trim().parse() != Ok(pid) || !loopback(bootstrap.trim()) {
            continue;
        }
        let when = entry.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        found.push((when, RunningBroker { pid, bootstrap: bootstrap.trim().to_owned() }));
    }
    found.into_iter().max_by_key(|(when, _)| *when).map(|(_, broker)| broker)
}

/// Whether every address of `bootstrap` is on this machine.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
fn loopback(bootstrap: &str) -> bool {
    !bootstrap.is_empty()
        && bootstrap.split(',').all(|address| {
            address.trim().parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
        })
}

/// Whether process `pid` runs.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists (and may be signalled).
        let sent = unsafe { libc::kill(pid, 0) };
        sent == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn service() -> String {
        format!("announce-test-{}", uuid::Uuid::now_v7())
    }

    #[test]
    fn an_announced_broker_is_found_while_its_process_runs_and_forgotten_when_it_stops() {
        let service = service();
        let dir = directory().unwrap();
        assert_eq!(find(&service), None);
        // This process's own note is not "a running app" for its commands: write one as another
        // live process would (the parent).
        let other = std::os::unix::process::parent_id();
        std::fs::write(note(&dir, &service, other), format!("{other}\n127.0.0.1:4567\n")).unwrap();
        assert_eq!(find(&service), Some(RunningBroker { pid: other, bootstrap: "127.0.0.1:4567".into() }));
        // An address off this machine is not taken from a note.
        std::fs::write(note(&dir, &service, other), format!("{other}\n10.66.66.66:9092\n")).unwrap();
        assert_eq!(find(&service), None);
        std::fs::remove_file(note(&dir, &service, other)).unwrap();
        // A process that is gone: its note is stale, and removed.
        let gone = note(&dir, &service, 4_000_000_000);
        std::fs::write(&gone, "4000000000\n127.0.0.1:4567\n").unwrap();
        assert_eq!(find(&service), None);
        assert!(!gone.exists());

        // Two instances: each removes only its own note.
        let mine = announce(&service, "127.0.0.1:9").unwrap();
        std::fs::write(note(&dir, &service, other), format!("{other}\n127.0.0.1:4568\n")).unwrap();
        assert!(note(&dir, &service, std::process::id()).exists());
        assert_eq!(find(&service).map(|b| b.pid), Some(other), "this process's own broker is not offered");
        drop(mine);
        assert!(!note(&dir, &service, std::process::id()).exists(), "removed when the app stops");
        assert_eq!(find(&service).map(|b| b.bootstrap), Some("127.0.0.1:4568".into()), "the other instance's note stays");
        std::fs::remove_file(note(&dir, &service, other)).unwrap();
    }

    #[test]
    fn names_that_read_the_same_once_made_safe_stay_apart() {
        assert_ne!(stem("a/b"), stem("a_b"));
        assert!(stem("../../etc/passwd").starts_with(".._.._etc_passwd-"));
        assert!(!stem("../x").contains('/'));
        assert!(stem(&"x".repeat(300)).len() < 100, "long names fit a file name");
    }

    #[test]
    fn the_directory_is_the_users_own() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = directory().unwrap();
        let meta = std::fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o077, 0);
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    }
}
