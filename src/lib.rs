//! coffre: a consent registry and encrypted personal-data vault run by a
//! local authority as a trusted third party.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else
//! lives here so tests drive the real router through [`app`].

pub mod app;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod oidc;
pub mod seed;
pub mod service;
pub mod storage;
pub mod web;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use app::{app, metrics_app};
pub use clock::Clock;
pub use config::Config;
pub use service::state::{AppInner, AppState, RegisterSource};

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests drain for at most `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    // The peer's address reaches the rate limiter (`http::ratelimit`).
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // TCP_NODELAY: a streamed answer (a deposit stream's line by line) is
    // many small writes; with Nagle's algorithm each waits for the peer's
    // acknowledgement of the one before, which the peer may delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on a connection");
        }
    });
    let graceful = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = drain_tx.send(());
    });
    let server = tokio::spawn(async move { graceful.await });
    let deadline = async move {
        if drain_rx.await.is_ok() {
            tokio::time::sleep(drain).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        joined = server => match joined {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e.to_string())),
        },
        () = deadline => {
            tracing::warn!(seconds = drain.as_secs(), "shutdown drain timed out; closing remaining connections");
            Ok(())
        }
    }
}

/// Installs the SIGTERM and Ctrl-C handlers now and returns a future that
/// resolves on either.
///
/// The handlers are registered before the caller announces that it listens:
/// a handler installed lazily, on the future's first poll, leaves a window in
/// which a supervisor's SIGTERM kills the process with the default action
/// instead of draining it.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let wait = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        async move {
            tokio::select! {
                _ = terminate.recv() => {},
                _ = interrupt.recv() => {},
            }
        }
    };
    #[cfg(not(unix))]
    let wait = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    Ok(async move {
        wait.await;
        tracing::info!("shutdown requested; draining in-flight requests");
    })
}
