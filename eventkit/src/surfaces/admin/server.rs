//! The admin API's HTTP/1 listener, built for hostile clients and kubelets alike.
//!
//! - **Timeouts.** A connection waits for a request at most the idle timeout (also before its
//!   first); once a request's first byte arrives, its line and headers must be complete within
//!   the header timeout. A body's own timeout is the endpoint's (see [`super::access`]).
//! - **A connection limit that never starves the probes.** At the limit, a new connection
//!   closes the oldest one with no request in progress (idle, or still sending its headers),
//!   sparing connections accepted in the last quarter second while older ones can go (so that
//!   a flood of new connections does not close a probe's before its request arrives): holding
//!   connections open cannot keep a kubelet's probe out. Should every connection be serving a
//!   request, a few more are let in above the limit (requests that wait on the cluster are
//!   bounded apart, and the others are quick). The limit also stays under a quarter of the
//!   process's file descriptor limit, and when the process runs out of descriptors anyway
//!   (other code holds them), the oldest idle connection is closed so that accepting goes on.
//! - Request heads are bounded (64 KiB of headers); connections are never upgraded. A head
//!   hyper itself refuses (malformed, too large) gets hyper's bare 400 or 431.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, warn};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    /// `max_connections`, but at most a quarter of the file descriptor limit (and at least 4).
    pub(crate) fn new(max_connections: usize, header_timeout: Duration, idle_timeout: Duration) -> Self {
        let by_descriptors = descriptor_limit().map_or(usize::MAX, |n| (n / 4).max(4));
        Limits { max_connections: max_connections.min(by_descriptors).max(1), header_timeout, idle_timeout }
    }
}

/// The soft limit on open file descriptors, where the platform has one.
fn descriptor_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
            return usize::try_from(limit.rlim_cur).ok();
        }
    }
    None
}

/// Connections let in above the limit while every one is serving a request.
const OVER_LIMIT: usize = 8;

/// How long a new connection is spared by eviction while older idle ones can go.
const NEWBORN: Duration = Duration::from_millis(250);

/// Where a connection is: waiting for a request, receiving its head, or serving it.
const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// A connection's phase and since when (milliseconds since the listener started).
struct Phase {
    phase: AtomicU8,
    since_ms: AtomicU64,
    epoch: Instant,
    changed: Notify,
}

impl Phase {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// When the connection is to be closed, unless it moves on first (`None` while serving).
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        match self.phase.load(Ordering::Acquire) {
            IDLE => Some(since + limits.idle_timeout),
            HEAD => Some(since + limits.header_timeout),
            _ => None,
        }
    }
}

/// The socket, noting the first byte of each request.
struct Watched {
    stream: TcpStream,
    phase: Arc<Phase>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && self.phase.phase.load(Ordering::Acquire) == IDLE {
            self.phase.set(HEAD);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// An open connection, as the listener keeps it.
struct Open {
    phase: Arc<Phase>,
    close: Option<oneshot::Sender<()>>,
    accepted: Instant,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Open>,
}

impl Table {
    /// Closes the oldest connection with no request in progress (sparing ones accepted just now
    /// while an older one can go); false when all are serving.
    fn close_oldest_idle(&mut self) -> bool {
        let now = Instant::now();
        let idle = |c: &Open| c.phase.phase.load(Ordering::Acquire) != BUSY;
        let oldest = self
            .open
            .iter()
            .find(|(_, c)| idle(c) && now.saturating_duration_since(c.accepted) >= NEWBORN)
            .or_else(|| self.open.iter().find(|(_, c)| idle(c)))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| self.open.remove(&id)) {
            Some(mut c) => {
                if let Some(close) = c.close.take() {
                    let _ = close.send(());
                }
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the table when its task ends.
struct Leave(Arc<Mutex<Table>>, u64);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).open.remove(&self.1);
    }
}

/// Serves `router` on `listener` until `stop` flips; then lets requests in progress finish
/// (up to a few seconds).
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: Limits, name: &'static str, mut stop: watch::Receiver<bool>) {
    let table = Arc::new(Mutex::new(Table::default()));
    let epoch = Instant::now();
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                // Out of descriptors: make room rather than stop accepting (probes come).
                let closed = table.lock().unwrap_or_else(|e| e.into_inner()).close_oldest_idle();
                if crate::kafka::outage::due(&format!("admin {name} descriptors")) {
                    warn!(listener = name, closed_idle = closed, "the process is out of file descriptors; the admin API closes idle connections to keep answering");
                }
                tokio::time::sleep(Duration::from_millis(if closed { 1 } else { 50 })).await;
                continue;
            }
            Err(e) => {
                debug!(listener = name, error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let phase = Arc::new(Phase { phase: AtomicU8::new(IDLE), since_ms: AtomicU64::new(0), epoch, changed: Notify::new() });
        phase.set(IDLE);
        let (close, closed) = oneshot::channel();
        let id = {
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            if t.open.len() >= limits.max_connections && !t.close_oldest_idle() {
                // Every connection is serving a request: a few more come in above the limit.
                if t.open.len() >= limits.max_connections + OVER_LIMIT {
                    if crate::kafka::outage::due(&format!("admin {name} full")) {
                        warn!(listener = name, limit = limits.max_connections, "the admin API is at its connection limit with every connection serving a request; refusing a connection");
                    }
                    continue;
                }
            }
            let id = t.next;
            t.next += 1;
            t.open.insert(id, Open { phase: phase.clone(), close: Some(close), accepted: Instant::now() });
            id
        };
        let leave = Leave(table.clone(), id);
        tasks.spawn(connection(stream, peer, router.clone(), phase, limits, closed, stop.clone(), leave));
    }
    drop(listener);
    // Requests in progress finish; idle connections close at once.
    let finish = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), finish).await.is_err() {
        tasks.abort_all();
    }
}

/// Serves one connection until the client closes it, a timeout passes, the listener makes
/// room, or the server stops.
#[allow(clippy::too_many_arguments)]
async fn connection(stream: TcpStream, peer: SocketAddr, router: Router, phase: Arc<Phase>, limits: Limits, mut closed: oneshot::Receiver<()>, mut stop: watch::Receiver<bool>, _leave: Leave) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Watched { stream, phase: phase.clone() });
    let service = {
        let phase = phase.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            phase.set(BUSY);
            request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            let (router, phase) = (router.clone(), phase.clone());
            async move {
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                phase.set(IDLE);
                response
            }
        })
    };
    let conn = http1::Builder::new().keep_alive(true).max_buf_size(80 << 10).max_header_size(64 << 10).serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let changed = phase.changed.notified();
        let deadline = phase.deadline(&limits);
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = &mut closed => {
                debug!(%peer, "admin connection closed to make room");
                break;
            }
            _ = stop.changed(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            () = changed => {}
            () = tokio::time::sleep_until(deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))), if deadline.is_some() => {
                if phase.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    debug!(%peer, "admin connection timed out");
                    break;
                }
            }
        }
    }
}
