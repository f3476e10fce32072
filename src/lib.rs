//! coffre: a consent registry and encrypted personal-data vault run by a
//! local authority as a trusted third party.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else
//! lives here so tests drive the real router through [`app`].

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod error;
pub mod http;
pub mod storage;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

pub use clock::Clock;
pub use config::Config;
pub use http::app;
use storage::DynStore;

/// Everything a request handler may need, shared by all requests of one
/// process. Nothing in here is per-process state that would break several
/// processes sharing one PostgreSQL: sessions and data live in the database.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<AppInner>,
}

pub struct AppInner {
    pub config: Config,
    pub store: DynStore,
    pub clock: Clock,
    /// Demo mode: the development login is enabled (loopback only).
    pub demo: bool,
}

impl AppState {
    pub fn new(config: Config, store: DynStore, clock: Clock, demo: bool) -> Self {
        Self {
            inner: Arc::new(AppInner {
                config,
                store,
                clock,
                demo,
            }),
        }
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.inner
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests drain for at most `drain` before returning.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = axum::serve(listener, router).with_graceful_shutdown(async move {
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

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining in-flight requests");
}
