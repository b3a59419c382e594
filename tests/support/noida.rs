//! A noida-db broker of a test's own, for tests that stop and restart a broker (the shared
//! one of `scripts/test.sh` serves every other test at the same time). `scripts/broker.sh`
//! exports the launcher's path as `EVENTKIT_TEST_NOIDA`.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A noida-db broker on 127.0.0.1 with its own port and data directory; stopped (with its
/// launcher's children) and its data removed when dropped.
pub struct Noida {
    bin: PathBuf,
    port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
}

impl Noida {
    /// The launcher named by `EVENTKIT_TEST_NOIDA`. Without it the test is not run, except in
    /// CI on noida-db (`EVENTKIT_TEST_BROKER=noida-db`), where that is a failure.
    pub fn binary(test: &str) -> Option<PathBuf> {
        match std::env::var("EVENTKIT_TEST_NOIDA") {
            Ok(p) if !p.trim().is_empty() => Some(p.into()),
            _ if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") && std::env::var("EVENTKIT_TEST_BROKER").is_ok_and(|b| b == "noida-db") => {
                panic!("EVENTKIT_TEST_NOIDA is not set in CI: `{test}` must run (scripts/broker.sh sets it)")
            }
            _ => {
                eprintln!("note: EVENTKIT_TEST_NOIDA not set; `{test}` ran on the embedded broker only (a broker given by address cannot be stopped by a test)");
                None
            }
        }
    }

    /// Starts a broker on a free port.
    pub fn start(bin: PathBuf) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let data_dir = std::env::temp_dir().join(format!("eventkit-test-noida-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let mut noida = Noida { bin, port, data_dir, child: None };
        noida.up();
        noida
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker again on the same port and data (after [`Noida::down`]).
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "noida-db is running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data_dir.join("noida.log")).expect("log");
        let child = Command::new(&self.bin)
            .args(["start", "--only", "kafka", "--kafka-port", &self.port.to_string(), "--host", "127.0.0.1", "--data-dir"])
            .arg(&self.data_dir)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            // The launcher starts the broker as its child: both in a group of their own.
            .process_group(0)
            .spawn()
            .expect("noida-db");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let log = std::fs::read_to_string(self.data_dir.join("noida.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "noida-db did not listen on {} within 30 s:\n{log}", self.port);
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("noida-db exited ({status}):\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker (SIGTERM to its process group; SIGKILL after 10 s).
    pub fn down(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // The launcher's children too.
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Noida {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
