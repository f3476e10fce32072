//! `coffre serve`: preparing keys (generated in demo mode), the demo's
//! guards, binding, the shutdown signals, the background jobs (retention
//! and session purge, checkpoints) and the demo banner.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::keys::{private_dir, read_unlock};
use super::{Fatal, build_state, open_store};
use crate::config::Config;
use crate::crypto::custodians::Manifest;
use crate::crypto::{KeyError, KeySet, LiveKeys, generate_unlock_identity};
use crate::service::seal::VaultAtStart;
use crate::{AppState, Clock};

/// At `serve`: loads the key set, initialising it first in demo mode.
/// Insecure permissions stop the start; any other failure leaves the
/// service up but failing closed (readyz 503, `keys_unavailable`).
fn prepare_keys(config: &Config, demo: bool) -> Result<VaultAtStart, Fatal> {
    let dir = &config.keys_dir;
    if Manifest::present(dir) {
        // Held by custodians: no file may open the set, and the process
        // starts sealed until K of them submit their shares.
        if config.unlock_identity_file.exists() {
            return Err(Fatal::config(format!(
                "the key set in {} is held by custodians, yet an unlock identity exists at {}: no file may open it; remove the file",
                dir.display(),
                config.unlock_identity_file.display()
            )));
        }
        let manifest = Manifest::read(dir)
            .map_err(|e| Fatal::config(format!("custodians: {e}")))?
            .ok_or_else(|| Fatal::config("custodians manifest vanished"))?;
        tracing::warn!(
            threshold = manifest.threshold,
            custodians = manifest.custodians.len(),
            socket = %config.admin_socket.display(),
            "starting SEALED: every data route answers 503 until the custodians run `coffre unseal`"
        );
        return Ok(VaultAtStart::Sealed {
            manifest,
            keys_dir: dir.clone(),
        });
    }
    if demo && !KeySet::is_initialised(dir) {
        private_dir(dir)?;
        let unlock = if config.unlock_identity_file.exists() {
            read_unlock(config)?
        } else {
            let id = generate_unlock_identity(&config.unlock_identity_file)
                .map_err(|e| Fatal::runtime(format!("unlock identity: {e}")))?;
            tracing::warn!(
                path = %config.unlock_identity_file.display(),
                "DEMO: generated an unlock identity BESIDE the keys it protects. Never do this in production: the unlock identity belongs on a separate secret mount."
            );
            id
        };
        KeySet::init(dir, &unlock).map_err(|e| Fatal::runtime(format!("keys init: {e}")))?;
        tracing::warn!(dir = %dir.display(), "DEMO: key set generated");
    }
    if !demo && config.unlock_identity_file.starts_with(dir) {
        tracing::warn!(
            path = %config.unlock_identity_file.display(),
            "the unlock identity is inside the keys folder: whoever copies the folder can decrypt every key. Set COFFRE_UNLOCK_IDENTITY_FILE to a separate secret mount."
        );
    }
    match LiveKeys::load(dir.clone(), config.unlock_identity_file.clone()) {
        Ok(keys) => Ok(VaultAtStart::Loaded(Arc::new(keys))),
        Err(e @ KeyError::InsecurePermissions { .. }) => Err(Fatal::config(format!("keys: {e}"))),
        Err(e) => {
            let reason = format!("keys unavailable: {e}");
            tracing::error!(
                "{reason}; serving with every data route closed (readyz 503) until fixed — see `coffre keys init`"
            );
            Ok(VaultAtStart::Unavailable(reason))
        }
    }
}

pub(super) async fn serve(config: Config, demo: bool) -> Result<(), Fatal> {
    if demo && !config.listen.ip().is_loopback() {
        return Err(Fatal::config(format!(
            "--demo is refused on {}: demo mode enables a password-less login and listens on loopback only (use 127.0.0.1 or ::1)",
            config.listen
        )));
    }
    let started = std::time::Instant::now();
    let clock = Clock::system();
    let keys = prepare_keys(&config, demo)?;
    if demo {
        refuse_demo_public_url(&config)?;
    }
    let store = open_store(&config).await?;
    if demo {
        refuse_foreign_database_in_demo(&store).await?;
    }
    let listen = config.listen;
    let metrics_listen = config.metrics_listen;
    let drain = Duration::from_secs(config.shutdown_timeout_secs);
    let database = config.database_url.redacted();
    let admin_socket = config.admin_socket.clone();
    let state = build_state(config, store.clone(), clock, demo, keys).await?;
    if let Ok(vault) = state.vault() {
        vault
            .register_kek_versions(state.clock.now())
            .await
            .map_err(|e| Fatal::runtime(e.to_string()))?;
    }
    // Custodians submit their shares over the local admin socket, bound
    // before "listening" so that they can unseal as soon as it is said.
    let admin = match &state.custodians {
        Some(_) => {
            Some(super::admin::spawn(&state.config.admin_socket.clone(), state.clone()).await?)
        }
        None => None,
    };
    if demo && state.is_sealed() {
        tracing::warn!(
            "DEMO: sealed by custodians; the demo territory is seeded only into an open vault"
        );
    } else if demo {
        let seeded = crate::demo::seed_if_empty(&state)
            .await
            .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
        if seeded {
            let now = state.clock.now();
            let report = crate::seed::seed_territory(
                &state,
                crate::demo::TERRITORY_RESIDENTS,
                2026,
                now,
                |_, _| {},
            )
            .await
            .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
            crate::demo::request_pending_extract(&state, now)
                .await
                .map_err(|e| Fatal::runtime(format!("demo seeding failed: {e}")))?;
            tracing::info!(
                residents = report.residents,
                mandates = report.mandates,
                "demo territory seeded"
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Fatal::runtime(format!("cannot listen on {listen} ({e})")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let shutdown = crate::shutdown_signal()
        .map_err(|e| Fatal::runtime(format!("cannot install the SIGTERM handler ({e})")))?;
    // Before "listening": once the service says it listens, so do metrics.
    let metrics = match metrics_listen {
        Some(at) => Some(spawn_metrics(at, state.clone()).await?),
        None => None,
    };
    tracing::info!(
        address = %local,
        database = %database,
        startup_ms = started.elapsed().as_millis() as u64,
        demo,
        "listening"
    );
    if demo {
        print_demo_banner(&local);
    }
    spawn_session_purge(state.clone());
    spawn_checkpointer(state.clone());
    spawn_notifier(state.clone())?;
    spawn_witnesses(state.clone())?;
    let router = crate::app(state);
    let result = crate::serve(listener, router, shutdown, drain).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(admin) = admin {
        admin.abort();
        // The socket file would only mislead the next `coffre unseal`.
        let _ = std::fs::remove_file(&admin_socket);
    }
    store.close().await;
    result.map_err(|e| Fatal::runtime(format!("server error: {e}")))
}

/// Serves `GET /metrics` on its own listener (never the public one), until
/// the main server stops. A listener that cannot be bound stops the start:
/// an operator who asked for metrics learns at once that none will come.
async fn spawn_metrics(
    at: std::net::SocketAddr,
    state: crate::AppState,
) -> Result<tokio::task::JoinHandle<()>, Fatal> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .map_err(|e| Fatal::runtime(format!("cannot listen for metrics on {at} ({e})")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    tracing::info!(address = %local, "metrics listening (GET /metrics)");
    if !local.ip().is_loopback() {
        tracing::warn!(address = %local, "metrics listen beyond loopback: /metrics has no authentication; keep this address on an operations network");
    }
    let router = crate::metrics_app(state);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "metrics listener stopped");
        }
    }))
}

/// Demo mode's password-less logins must only ever reach a browser on this
/// machine: a public URL elsewhere (or behind a TLS front) means a real
/// deployment.
fn refuse_demo_public_url(config: &Config) -> Result<(), Fatal> {
    let loopback = config
        .public_url
        .host()
        .is_some_and(|h| crate::config::is_loopback_host(&h));
    if loopback {
        return Ok(());
    }
    Err(Fatal::config(format!(
        "--demo is refused with the public URL {}: demo mode enables password-less logins and serves this machine only (use http://127.0.0.1:PORT)",
        config.public_url
    )))
}

/// Demo mode on a database it did not seed would open that database's
/// DPO and auditor views to anyone: refused.
async fn refuse_foreign_database_in_demo(store: &crate::storage::DynStore) -> Result<(), Fatal> {
    let runtime = |e: crate::storage::StorageError| Fatal::runtime(e.to_string());
    if store
        .has_instance_mark(crate::demo::DEMO_MARK)
        .await
        .map_err(runtime)?
        || store.is_blank().await.map_err(runtime)?
    {
        return Ok(());
    }
    Err(Fatal::config(
        "--demo is refused on this database: it was not seeded by the demo (demo mode enables password-less logins). Use an empty database, or serve without --demo",
    ))
}

/// Deletes expired sessions every ten minutes (any process may do it; the
/// delete is idempotent, so several processes sharing PostgreSQL are fine).
fn spawn_session_purge(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        let mut round: u64 = 0;
        loop {
            tick.tick().await;
            round += 1;
            // The whole retention job at start and then every hour;
            // expired sessions every ten minutes.
            if round % 6 == 1 {
                if let Err(e) =
                    crate::service::rights::run_retention(&state, state.clock.now()).await
                {
                    tracing::warn!(error = %e, "retention run failed");
                }
                // Last month's open statistics, once: a month already
                // published is left as it is (any process may try; one
                // stores it).
                crate::service::stats::publish_due(&state, state.clock.now()).await;
                continue;
            }
            match state
                .store
                .purge_expired_sessions(
                    state.clock.now(),
                    state.clock.now() - crate::service::sessions::SESSION_IDLE_SECS,
                )
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(n, "expired sessions purged"),
                Err(e) => tracing::warn!(error = %e, "session purge failed"),
            }
            if let Err(e) =
                crate::service::sources::purge_expired_codes(&state, state.clock.now()).await
            {
                tracing::warn!(error = %e, "link code purge failed");
            }
        }
    });
}

/// Signs a new checkpoint each second the log grew (any process may; the
/// same tree size always yields the same signed note, Ed25519 being
/// deterministic, so concurrent processes agree).
fn spawn_checkpointer(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let Ok(signer) = state.checkpoint_signer() else {
                continue;
            };
            if let Err(e) = state.audit.checkpoint(&signer, state.clock.now()).await {
                tracing::warn!(error = %e, "checkpoint failed");
            }
        }
    });
}

/// Sends new checkpoints to the log's witnesses every ten seconds (any
/// process may: the witnesses' state only moves forward, and a 409 tells
/// the size a witness knows).
fn spawn_witnesses(state: AppState) -> Result<(), Fatal> {
    let witnesses = crate::service::witness::load(&state.config).map_err(Fatal::config)?;
    if witnesses.is_empty() {
        return Ok(());
    }
    tracing::info!(count = witnesses.len(), "audit log witnesses configured");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            match crate::service::witness::round(&state, &witnesses, state.clock.now()).await {
                Ok(r) if r != Default::default() => tracing::info!(
                    cosigned = r.cosigned,
                    refused = r.refused,
                    unreachable = r.unreachable,
                    "witness round"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "witness round failed"),
            }
        }
    });
    Ok(())
}

/// Delivers the outbox's messages every five seconds, when an SMTP relay is
/// configured (any process may: messages are claimed under a lease). While
/// sealed, nothing is claimed (the notifier needs the vault).
fn spawn_notifier(state: AppState) -> Result<(), Fatal> {
    let mailer =
        crate::service::notify::Mailer::from_config(&state.config).map_err(Fatal::config)?;
    let Some(mailer) = mailer else {
        tracing::warn!("no smtp_url: residents' notices stay queued (coffre outbox status)");
        return Ok(());
    };
    // A register or policy without the notifier would refuse every
    // message: said at the start, not discovered in the log a day later.
    crate::service::notify::check_ready(&state).map_err(Fatal::config)?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if state.vault().is_err() {
                continue;
            }
            match crate::service::notify::deliver_due(&state, &mailer, state.clock.now()).await {
                Ok(r) if r != Default::default() => tracing::info!(
                    sent = r.sent,
                    retried = r.retried,
                    failed = r.failed,
                    post = r.post,
                    muted = r.muted,
                    "notices delivered"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "notice delivery failed"),
            }
            match crate::service::notify::deliver_alerts(&state, &mailer, state.clock.now()).await {
                Ok(r) if r != Default::default() => tracing::info!(
                    sent = r.sent,
                    retried = r.retried,
                    failed = r.failed,
                    "référents' alerts e-mailed"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "alert e-mail delivery failed"),
            }
        }
    });
    Ok(())
}

fn print_demo_banner(local: &std::net::SocketAddr) {
    let mut out = String::new();
    out.push_str("\n  ================================================================\n");
    out.push_str("  MODE DÉMO / DEMO MODE — fictional people, password-less login.\n");
    out.push_str("  Never expose this instance: it listens on loopback only.\n");
    out.push_str("  ================================================================\n");
    out.push_str(&format!("  Open      http://{local}/\n"));
    out.push_str(&format!("  Personas  curl http://{local}/dev/personas\n"));
    out.push_str(&format!(
        "  Log in    curl -i -d persona={} http://{local}/dev/login\n",
        crate::demo::RESIDENTS[0].id
    ));
    out.push_str(&format!("  API       http://{local}/api/openapi.json\n"));
    out.push_str(&format!(
        "  Aidants' TOTP (any authenticator app): {}\n",
        crate::service::mandates::otpauth_uri(
            "coffre-demo",
            "aidants",
            crate::demo::DEMO_TOTP_SECRET
        )
    ));
    out.push_str("  Demo partners (OAuth2 client credentials):\n");
    for p in crate::demo::PARTNERS {
        out.push_str(&format!(
            "    {:<16} client_id={} client_secret={}\n",
            p.id, p.client_id, p.client_secret
        ));
        out.push_str(&format!(
            "    {:<16} age identity (decrypts its extracts): {}\n",
            "", p.age_identity
        ));
    }
    // The banner is a courtesy: a stdout that cannot be written (closed,
    // or on a full disk) must not stop the server.
    let _ = writeln!(std::io::stdout(), "{out}");
}
