//! The local admin socket of a process whose key set is held by
//! custodians, and the commands that talk to it: `coffre unseal`,
//! `coffre seal`, `coffre seal-status`, and `coffre keys rotate` (which
//! runs inside the unsealed process, the only holder of the keys).
//!
//! The socket is a Unix socket, mode 0600, in a folder the service owns;
//! a connection whose peer is neither the socket's owner nor root is
//! dropped before it is read. One JSON request a line, one JSON answer a line. It is never
//! served on the public listener: a share crosses only this machine's
//! kernel.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use zeroize::{Zeroize, Zeroizing};

use super::Fatal;
use crate::AppState;
use crate::config::Config;
use crate::service::seal::{self, SealStatus};

/// A request is one line, well under this (a share is ~200 bytes).
const MAX_REQUEST: u64 = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum AdminRequest {
    Status,
    /// `share`: base64 of the decrypted share file.
    Unseal {
        share: String,
    },
    Seal,
    Rotate {
        batch: i64,
    },
}

impl Drop for AdminRequest {
    fn drop(&mut self) {
        if let AdminRequest::Unseal { share } = self {
            share.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct AdminAnswer {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<StatusView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation: Option<RotationView>,
}

#[derive(Serialize, Deserialize, Debug)]
struct StatusView {
    sealed: bool,
    custodians: bool,
    shares: usize,
    threshold: usize,
}

impl From<SealStatus> for StatusView {
    fn from(s: SealStatus) -> Self {
        Self {
            sealed: s.sealed,
            custodians: s.custodians,
            shares: s.shares,
            threshold: s.threshold,
        }
    }
}

#[derive(Serialize, Deserialize, Debug)]
struct ErrorView {
    code: String,
    message: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct RotationView {
    target_version: u32,
    added_version: bool,
    rewrapped: u64,
    retired: Vec<u32>,
}

fn failure(e: &seal::SealError) -> AdminAnswer {
    AdminAnswer {
        ok: false,
        status: None,
        error: Some(ErrorView {
            code: e.code().to_string(),
            message: e.to_string(),
        }),
        rotation: None,
    }
}

fn answer_status(s: SealStatus) -> AdminAnswer {
    AdminAnswer {
        ok: true,
        status: Some(s.into()),
        error: None,
        rotation: None,
    }
}

/// Binds the admin socket (0600) and serves it until the process ends.
/// Refused when another process already answers on it; a stale socket
/// file left by a killed process is replaced.
pub(super) async fn spawn(
    path: &Path,
    state: AppState,
) -> Result<tokio::task::JoinHandle<()>, Fatal> {
    let cannot = |what: &str, e: std::io::Error| {
        Fatal::runtime(format!(
            "admin socket {}: {what} ({})",
            path.display(),
            e.kind()
        ))
    };
    // The folder is private to the service (0700): nobody else can swap
    // the socket between bind and chmod, or plant one for a custodian.
    let parent = private_parent(path)?;
    if !parent.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&parent)
            .map_err(|e| cannot("cannot create its folder", e))?;
    }
    let folder =
        std::fs::symlink_metadata(&parent).map_err(|e| cannot("cannot inspect its folder", e))?;
    if !folder.is_dir() || folder.permissions().mode() & 0o077 != 0 {
        return Err(Fatal::config(format!(
            "admin socket {}: its folder must be a directory only the service reaches (0700)",
            path.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match UnixStream::connect(path).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                _ => {
                    return Err(Fatal::runtime(format!(
                        "admin socket {}: another process answers on it (or it cannot be probed)",
                        path.display()
                    )));
                }
            }
            std::fs::remove_file(path).map_err(|e| cannot("cannot remove the stale socket", e))?;
        }
        Ok(_) => {
            return Err(Fatal::config(format!(
                "admin socket {}: something that is not a socket is there",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(cannot("cannot inspect", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| cannot("cannot bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| cannot("cannot restrict to 0600", e))?;
    // Between bind and chmod another local user could connect: the peer
    // check below closes that window (only the socket's owner is served).
    let owner = std::fs::metadata(path)
        .map_err(|e| cannot("cannot inspect", e))?
        .uid();
    tracing::info!(path = %path.display(), "admin socket listening (custodians: coffre unseal)");
    Ok(tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match stream.peer_cred() {
                // The service's own user, or root (who can read the
                // process's memory anyway: `sudo coffre unseal` under a
                // systemd DynamicUser).
                Ok(cred) if cred.uid() == owner || cred.uid() == 0 => {}
                _ => {
                    tracing::warn!("admin socket: a connection from another user was dropped");
                    continue;
                }
            }
            // A task per connection: a rotation may take minutes, and a
            // seal must not wait for it (unseal and seal are serialised
            // by the service; a silent client is cut after IO_TIMEOUT).
            tokio::spawn(handle(stream, state.clone()));
        }
    }))
}

async fn handle(stream: UnixStream, state: AppState) {
    let (read, mut write) = stream.into_split();
    let mut line = Zeroizing::new(String::new());
    let read = tokio::time::timeout(
        IO_TIMEOUT,
        BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await;
    let answer = match read {
        Ok(Ok(_)) => match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => act(&state, &request).await,
            Err(_) => AdminAnswer {
                ok: false,
                status: None,
                error: Some(ErrorView {
                    code: "bad_request".into(),
                    message: "expected one JSON request on one line".into(),
                }),
                rotation: None,
            },
        },
        _ => return,
    };
    let Ok(mut text) = serde_json::to_vec(&answer) else {
        return;
    };
    text.push(b'\n');
    let _ = tokio::time::timeout(IO_TIMEOUT, write.write_all(&text)).await;
}

async fn act(state: &AppState, request: &AdminRequest) -> AdminAnswer {
    let now = state.clock.now();
    match request {
        AdminRequest::Status => answer_status(seal::status(state).await),
        AdminRequest::Unseal { share } => {
            let Ok(bytes) = STANDARD.decode(share.as_bytes()).map(Zeroizing::new) else {
                return failure(&seal::SealError::Refused(
                    crate::crypto::custodians::Refusal::Malformed,
                ));
            };
            match seal::submit_share(state, &bytes, now).await {
                Ok(s) => answer_status(s),
                Err(e) => failure(&e),
            }
        }
        AdminRequest::Seal => match seal::seal(state, now).await {
            Ok(s) => answer_status(s),
            Err(e) => failure(&e),
        },
        AdminRequest::Rotate { batch } => {
            if *batch < 1 {
                return failure(&seal::SealError::Rotation(
                    "--batch must be at least 1".into(),
                ));
            }
            match seal::rotate(state, *batch, now).await {
                Ok(r) => AdminAnswer {
                    ok: true,
                    status: None,
                    error: None,
                    rotation: Some(RotationView {
                        target_version: r.target_version,
                        added_version: r.added_version,
                        rewrapped: r.rewrapped,
                        retired: r.retired,
                    }),
                },
                Err(e) => failure(&e),
            }
        }
    }
}

/// The socket's folder; the path must be absolute (a relative one would
/// depend on where a custodian stands when they run `coffre unseal`).
fn private_parent(path: &Path) -> Result<std::path::PathBuf, Fatal> {
    match path.parent() {
        Some(p) if path.is_absolute() && !p.as_os_str().is_empty() => Ok(p.to_path_buf()),
        _ => Err(Fatal::config(format!(
            "admin_socket {}: must be an absolute path, e.g. /run/coffre/admin.sock",
            path.display()
        ))),
    }
}

/// Sends one request to the running process and reads its answer. The
/// socket must sit in a folder that only the process answering on it
/// owns and can write (0700 or at least not writable by group or others):
/// a share is never handed to a socket someone else could have planted.
async fn ask(socket: &Path, request: &AdminRequest) -> Result<AdminAnswer, Fatal> {
    let parent = private_parent(socket)?;
    let unreachable = |e: std::io::Error| {
        Fatal::runtime(format!(
            "no coffre process answers on the admin socket {} ({}); is `coffre serve` running with this configuration?",
            socket.display(),
            e.kind()
        ))
    };
    let mut stream = tokio::time::timeout(IO_TIMEOUT, UnixStream::connect(socket))
        .await
        .map_err(|_| Fatal::runtime("the admin socket did not answer".to_string()))?
        .map_err(unreachable)?;
    let folder = std::fs::metadata(&parent).map_err(unreachable)?;
    let server = stream.peer_cred().map_err(unreachable)?;
    if folder.permissions().mode() & 0o022 != 0 || folder.uid() != server.uid() {
        return Err(Fatal::runtime(format!(
            "refusing to send anything to {}: its folder is writable by others or not owned by the process answering on it",
            socket.display()
        )));
    }
    let mut text = Zeroizing::new(
        serde_json::to_vec(request).map_err(|e| Fatal::runtime(format!("request: {e}")))?,
    );
    text.push(b'\n');
    stream.write_all(&text).await.map_err(unreachable)?;
    let mut line = String::new();
    // A rotation may take minutes; the rest answers at once.
    let limit = match request {
        AdminRequest::Rotate { .. } => Duration::from_secs(24 * 3600),
        _ => IO_TIMEOUT * 3,
    };
    tokio::time::timeout(
        limit,
        BufReader::new(stream.take(MAX_REQUEST)).read_line(&mut line),
    )
    .await
    .map_err(|_| Fatal::runtime("the admin socket did not answer in time".to_string()))?
    .map_err(unreachable)?;
    serde_json::from_str(&line).map_err(|_| {
        Fatal::runtime("the admin socket answered something that is not an answer".to_string())
    })
}

fn status_line(s: &StatusView) -> String {
    if !s.custodians {
        "this key set is not held by custodians".to_string()
    } else if s.sealed {
        format!("sealed: {} of {} shares received", s.shares, s.threshold)
    } else {
        "unsealed".to_string()
    }
}

fn refused(answer: AdminAnswer) -> Fatal {
    match answer.error {
        Some(e) => Fatal::runtime(format!("{} ({})", e.message, e.code)),
        None => Fatal::runtime("refused".to_string()),
    }
}

/// `coffre unseal --share F --identity I`: decrypts the custodian's own
/// share with their age identity, here, and submits it.
pub(super) async fn unseal(config: &Config, share: &Path, identity: &Path) -> Result<(), Fatal> {
    let me = crate::crypto::read_unlock_identity(identity)
        .map_err(|e| Fatal::runtime(format!("your identity: {e}")))?;
    let plain = crate::crypto::custodians::open_share_file(share, &me)
        .map_err(|e| Fatal::runtime(e.to_string()))?;
    let request = AdminRequest::Unseal {
        share: STANDARD.encode(plain.as_slice()),
    };
    let answer = ask(&config.admin_socket, &request).await?;
    if !answer.ok {
        return Err(refused(answer));
    }
    if let Some(s) = &answer.status {
        println!("share accepted; {}", status_line(s));
    }
    Ok(())
}

/// `coffre seal`.
pub(super) async fn seal(config: &Config) -> Result<(), Fatal> {
    let answer = ask(&config.admin_socket, &AdminRequest::Seal).await?;
    if !answer.ok {
        return Err(refused(answer));
    }
    println!("sealed");
    Ok(())
}

/// `coffre seal-status`.
pub(super) async fn status(config: &Config) -> Result<(), Fatal> {
    let answer = ask(&config.admin_socket, &AdminRequest::Status).await?;
    match (&answer.ok, &answer.status) {
        (true, Some(s)) => {
            println!("{}", status_line(s));
            Ok(())
        }
        _ => Err(refused(answer)),
    }
}

/// `coffre keys rotate` for a custodians' key set: inside the running,
/// unsealed process.
pub(super) async fn rotate(config: &Config, batch: i64) -> Result<(), Fatal> {
    let answer = ask(&config.admin_socket, &AdminRequest::Rotate { batch }).await?;
    match (&answer.ok, &answer.rotation) {
        (true, Some(r)) => {
            println!(
                "rotation complete: current KEK version {}{}; {} data keys re-wrapped; retired {:?}",
                r.target_version,
                if r.added_version {
                    " (new)"
                } else {
                    " (resumed)"
                },
                r.rewrapped,
                r.retired
            );
            Ok(())
        }
        _ => Err(refused(answer)),
    }
}
