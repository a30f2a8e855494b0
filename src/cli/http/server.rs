//! `serve`'s HTTP server: connections accepted within limits and served by
//! hyper (HTTP/1.1), and a graceful shutdown within a deadline.
//!
//! - At most `--max-connections` connections at once: past it, new ones
//!   wait in the kernel's accept queue until one closes.
//! - A request's head must arrive within `--header-read-timeout` (hyper's
//!   own timer), which also closes a keep-alive connection left idle that
//!   long: a client that sends half a header, or nothing, cannot hold a
//!   connection.
//! - With TLS, at most `--max-tls-handshakes` handshakes run at once, each
//!   within the same timeout.
//! - Ingest bodies must arrive within `--body-read-timeout` (read where
//!   they are read: the ingest endpoints).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The listening socket, with room for 1,024 connections waiting to be
/// accepted (the default of 128 overflows when hundreds of clients connect
/// at once, and each connection dropped there waits a second for its SYN to
/// be sent again).
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Connections the kernel keeps waiting for `accept`.
const BACKLOG: u32 = 1024;

/// The server's limits (`--max-connections`, `--header-read-timeout`,
/// `--max-tls-handshakes`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub(crate) max_connections: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) max_tls_handshakes: usize,
}

/// Serve `router` on `listener` (TLS with `tls`) until `shutdown` is
/// cancelled; then stop accepting, let requests in progress finish until
/// `grace` has passed, and close what is still open. Returns when the
/// shutdown began.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    shutdown: &CancellationToken,
    grace: Duration,
) -> Instant {
    let server = Server {
        router,
        tls,
        limits,
        handshakes: Arc::new(Semaphore::new(limits.max_tls_handshakes)),
        graceful: GracefulShutdown::new(),
        hard_stop: CancellationToken::new(),
        connections: TaskTracker::new(),
    };
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = accept(&listener, &open) => accepted,
        };
        if let Some((stream, permit)) = accepted {
            server.spawn(stream, permit);
        }
    }
    let began = Instant::now();
    drop(listener);
    server.stop(began + grace).await;
    began
}

/// The next connection and its place among the open ones (`None` when
/// accept failed: out of file descriptors and the like, waited out).
async fn accept(
    listener: &TcpListener,
    open: &Arc<Semaphore>,
) -> Option<(TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    let permit = open.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => {
            stream.set_nodelay(true).ok();
            Some((stream, permit))
        }
        Err(e) => {
            tracing::debug!("accept failed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

struct Server {
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: HttpLimits,
    handshakes: Arc<Semaphore>,
    graceful: GracefulShutdown,
    /// Cancelled when the grace period is over: close every connection.
    hard_stop: CancellationToken,
    connections: TaskTracker,
}

impl Server {
    /// Serve one connection in a task of its own, holding `permit` until it
    /// closes.
    fn spawn(&self, stream: TcpStream, permit: tokio::sync::OwnedSemaphorePermit) {
        let tls = self.tls.clone();
        let handshakes = self.handshakes.clone();
        let timeout = self.limits.header_read_timeout;
        let router = self.router.clone();
        let watcher = self.graceful.watcher();
        let hard_stop = self.hard_stop.clone();
        self.connections.spawn(async move {
            let _permit = permit;
            let served = async {
                match tls {
                    None => serve_connection(stream, router, timeout, watcher).await,
                    Some(acceptor) => {
                        let Some(stream) = handshake(stream, &acceptor, &handshakes, timeout).await
                        else {
                            return;
                        };
                        serve_connection(stream, router, timeout, watcher).await;
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = hard_stop.cancelled() => {}
            }
        });
    }

    /// Ask every connection to finish its request in progress and close;
    /// close those still open at `deadline`.
    async fn stop(self, deadline: Instant) {
        self.connections.close();
        if tokio::time::timeout_at(deadline, self.graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("HTTP connections still open at the shutdown deadline; closing them");
        }
        self.hard_stop.cancel();
        self.connections.wait().await;
    }
}

/// The TLS handshake, one of at most `--max-tls-handshakes` at once, within
/// `timeout`; `None` when it failed (the client's side reports it).
async fn handshake(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    handshakes: &Semaphore,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let _turn = handshakes.acquire().await.ok()?;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!("TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// HTTP/1.1 on one connection, with hyper's header read timeout.
async fn serve_connection<S>(
    stream: S,
    router: Router,
    header_read_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!("connection ended: {e}");
    }
}
