//! What setting a private cluster up and reaching it take: the role it is
//! made with, a free port, a random password, and a connection on a private
//! runtime for this module's blocking code (`launch`, in `handle.rs`, puts
//! them together).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

use crate::Error;

/// The superuser `initdb` creates, and the user we connect as.
pub(super) const USER: &str = "pglogsink";

/// Connect with `config` (no TLS) and run `work` on that connection, on a
/// private thread with a current-thread runtime of its own, so that the
/// blocking code of this module works from inside an async context too.
/// `context` names what is done, for errors.
pub(super) fn on_private_runtime<T, F, Fut>(
    context: &str,
    config: crate::ConnectConfig,
    work: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let thread_context = context.to_owned();
    let worker = std::thread::Builder::new()
        .name("pglogsink-embedded-sql".to_owned())
        .spawn(move || -> Result<T, Error> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    Error::embedded(format!(
                        "{thread_context}: could not build a tokio runtime ({e}); check the \
                         process's resource limits."
                    ))
                })?;
            runtime.block_on(async move {
                let (client, connection) =
                    config
                        .postgres()
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| Error::database(thread_context.clone(), e))?;
                let connection = tokio::spawn(connection);
                let result = work(client, thread_context).await;
                let _ = connection.await;
                result
            })
        })
        .map_err(|e| {
            Error::embedded(format!(
                "{context}: could not spawn a thread ({e}); check the process's resource limits."
            ))
        })?;
    worker.join().map_err(|_| {
        Error::embedded(format!(
            "{context}: the worker thread panicked; this is a bug in pglogsink, please report it."
        ))
    })?
}

/// A free TCP port on 127.0.0.1 (free now; the server may still lose a race
/// for it, which the caller retries).
pub(super) fn free_port() -> Result<u16, Error> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("picking a free TCP port on", "127.0.0.1", e))
}

/// `bytes` random bytes from the operating system, as lowercase hex.
pub(super) fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    if !crate::random::fill(&mut buf) {
        return Err(Error::io(
            "drawing random bytes from",
            "the operating system",
            std::io::Error::other("no randomness available"),
        ));
    }
    Ok(crate::hex::encode(&buf))
}
