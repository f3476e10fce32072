//! Key handling and envelope encryption for coffre.
//!
//! This module (the `crypto` root) owns:
//! - the error types shared by the submodules ([`KeyError`], [`CryptoError`]);
//! - the *unlock identity*: an age X25519 identity file in the `age-keygen` format, which
//!   is the single secret an operator provisions; every other key is age-encrypted to it;
//! - the low-level secret-file helpers: permission checks done on the opened file
//!   descriptor, and no-clobber atomic creation of 0600 files.
//!
//! It must never: put secret bytes (keys, identity strings, plaintext) into an error, a log
//! line or a `Debug` output; create a secret file whose mode admits group or others; read a
//! secret file that group or others can access; silently overwrite an existing key file.
//!
//! Submodules: [`keyset`] (the on-disk key set and KEK rotation), [`envelope`] (data keys,
//! wrapping, sealing values) and [`pseudonym`] (keyed pseudonyms).

// Lint the no-panic rule mechanically rather than by review; tests opt out locally.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod bearer_seal;
pub mod custodians;
pub mod dp;
pub mod envelope;
pub mod jwks;
pub mod jws;
pub mod keyset;
pub mod live;
pub mod pseudonym;

pub use bearer_seal::{open_for_bearer, seal_for_bearer};
pub use envelope::{DataKey, SealContext, SealProvenance, Sealer, WrappedDataKey, open, seal};
pub use jwks::jwks;

/// Lower-case hex SHA-256 of a text: how high-entropy secrets (session
/// tokens, partner client secrets) are stored, and the published digest of
/// a statistics release and its tables. They carry 256 random bits, so no password
/// stretching is needed; comparing digests keeps timing independent of how
/// many leading bytes of a guess were right.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        secret.as_bytes(),
    ))
}

/// 256 random bits, base64url: session tokens, CSRF tokens, login browser
/// cookies and client secrets (stored only as [`sha256_hex`]).
pub fn random_token() -> Result<String, CryptoError> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CryptoError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

pub use keyset::KeySet;
pub use live::LiveKeys;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

/// Errors about key material and key files. Messages carry paths, versions and fixed
/// reasons only: never key bytes, identity strings or file contents.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key directory {dir} is already initialised")]
    AlreadyInitialised { dir: PathBuf },
    #[error("{path} is accessible by group or others; files must be 0600 and directories 0700")]
    InsecurePermissions { path: PathBuf },
    #[error("{path} is not a regular file or directory as expected")]
    NotARegularFile { path: PathBuf },
    #[error("required key file {file} is missing")]
    Missing { file: PathBuf },
    #[error(
        "{file} cannot be decrypted with this unlock identity (wrong identity or tampered file)"
    )]
    Undecryptable { file: PathBuf },
    #[error("{file} decrypted but its content is not the key it should hold")]
    Corrupt { file: PathBuf },
    #[error("{path} is larger than any key file this module writes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not a valid age X25519 identity file: {reason}")]
    InvalidIdentity { path: PathBuf, reason: String },
    #[error("{path} already exists; refusing to overwrite key material")]
    FileExists { path: PathBuf },
    #[error("this unlock identity is not the one the key set's files are encrypted to")]
    WrongUnlockIdentity,
    #[error("KEK version {version} is the current version and cannot be retired")]
    RetireCurrent { version: u32 },
    #[error("KEK version {version} is not in the key set")]
    UnknownKekVersion { version: u32 },
    #[error("KEK version numbers are exhausted")]
    VersionExhausted,
    #[error("the Ed25519 signing seed was rejected")]
    InvalidSigningSeed,
    #[error("the system random number generator failed")]
    Random,
    #[error("age encryption of a key file failed")]
    Encrypt(#[source] age::EncryptError),
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Errors from wrapping data keys and sealing values. Deliberately coarse: an attacker
/// probing ciphertexts learns only "integrity failure", never which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("integrity check failed (wrong key, wrong context or tampered data)")]
    Integrity,
    #[error("data key is wrapped under KEK version {version}, which is not in the key set")]
    UnknownKekVersion { version: u32 },
    #[error("the system random number generator failed")]
    Random,
    #[error("AEAD key setup or sealing failed")]
    Internal,
}

impl KeyError {
    fn io(path: &Path, source: io::Error) -> Self {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The operator-held age X25519 identity that unlocks the key set.
pub struct UnlockIdentity {
    // `age::x25519::Identity` wraps an x25519-dalek `StaticSecret`, which zeroizes on drop.
    identity: age::x25519::Identity,
}

impl UnlockIdentity {
    /// The public recipient (`age1...`) that key files are encrypted to.
    pub fn recipient(&self) -> age::x25519::Recipient {
        self.identity.to_public()
    }

    pub(crate) fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }
}

impl fmt::Debug for UnlockIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnlockIdentity")
            .field("recipient", &self.recipient().to_string())
            .finish_non_exhaustive()
    }
}

/// Largest identity file we accept; real ones are ~190 bytes. Bounds memory and the
/// number of (non-zeroized) buffer growths.
const MAX_IDENTITY_FILE_LEN: usize = 64 * 1024;

/// Reads an `age-keygen` style identity file: `#` comment lines and exactly one
/// `AGE-SECRET-KEY-1...` line. Refuses the file if group or others have any access.
pub fn read_unlock_identity(path: &Path) -> Result<UnlockIdentity, KeyError> {
    let contents = read_private_file(path, MAX_IDENTITY_FILE_LEN)?;
    let invalid = |reason: String| KeyError::InvalidIdentity {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(&contents).map_err(|_| invalid("not UTF-8".into()))?;
    let mut found: Option<age::x25519::Identity> = None;
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Only the line number goes into the error: the line itself may be a key.
        let identity = line.parse::<age::x25519::Identity>().map_err(|reason| {
            invalid(format!(
                "line {} is not an X25519 identity ({reason})",
                index + 1
            ))
        })?;
        if found.is_some() {
            // Several identities would make "the" recipient ambiguous for new key files.
            return Err(invalid("more than one identity".into()));
        }
        found = Some(identity);
    }
    let identity = found.ok_or_else(|| invalid("no identity found".into()))?;
    Ok(UnlockIdentity { identity })
}

/// Generates a new X25519 identity and writes it to `path` (which must not exist) in the
/// `age-keygen` format, created with mode 0600 and published atomically.
pub fn generate_unlock_identity(path: &Path) -> Result<UnlockIdentity, KeyError> {
    let identity = age::x25519::Identity::generate();
    let (dir, name) = split_path(path)?;
    let secret = identity.to_string();
    let mut contents = Zeroizing::new(String::with_capacity(256));
    contents.push_str("# created: ");
    contents.push_str(&rfc3339_utc_now());
    contents.push_str("\n# public key: ");
    contents.push_str(&identity.to_public().to_string());
    contents.push('\n');
    contents.push_str(secret.expose_secret());
    contents.push('\n');
    write_new_private_file(dir, name, contents.as_bytes())?;
    tracing::info!(path = %path.display(), "generated unlock identity");
    Ok(UnlockIdentity { identity })
}

fn split_path(path: &Path) -> Result<(&Path, &str), KeyError> {
    let name =
        path.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| KeyError::NotARegularFile {
                path: path.to_path_buf(),
            })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((dir, name))
}

/// age-encrypts `plain` to one X25519 recipient, in memory (binary age v1).
/// `path` names the file it is for, in errors.
fn age_encrypt_to(
    recipient: &age::x25519::Recipient,
    plain: &[u8],
    path: &Path,
) -> Result<Vec<u8>, KeyError> {
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
            .map_err(KeyError::Encrypt)?;
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| KeyError::io(path, e))?;
    writer.write_all(plain).map_err(|e| KeyError::io(path, e))?;
    writer.finish().map_err(|e| KeyError::io(path, e))?;
    Ok(out)
}

/// Decrypts an age file held in memory with `identity`, reading at most
/// `max + 1` plaintext bytes into a buffer reserved up front (no
/// reallocation, so no stray copy), so that the caller sees an overlong
/// payload. `None` when it does not decrypt (wrong identity, tampered):
/// which check failed is not said.
fn age_decrypt_with(
    ciphertext: &[u8],
    identity: &UnlockIdentity,
    max: usize,
) -> Option<Zeroizing<Vec<u8>>> {
    let decryptor = age::Decryptor::new_buffered(ciphertext).ok()?;
    let reader = decryptor
        .decrypt(std::iter::once(identity.identity() as &dyn age::Identity))
        .ok()?;
    // Payload authentication failures surface here, chunk by chunk.
    let mut plain = Zeroizing::new(Vec::with_capacity(max + 1));
    reader.take(max as u64 + 1).read_to_end(&mut plain).ok()?;
    Some(plain)
}

/// Refuses any group/other permission bit. Applied to files and directories alike:
/// even `x` on a directory or `r` on an encrypted file leaks more than we need to.
fn ensure_private_mode(path: &Path, mode: u32) -> Result<(), KeyError> {
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Checks that `dir` is a directory with no group/other access.
fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    let meta = fs::metadata(dir).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            KeyError::Missing {
                file: dir.to_path_buf(),
            }
        } else {
            KeyError::io(dir, e)
        }
    })?;
    if !meta.is_dir() {
        return Err(KeyError::NotARegularFile {
            path: dir.to_path_buf(),
        });
    }
    ensure_private_mode(dir, meta.permissions().mode())
}

/// Reads a whole file that must be a regular file with no group/other access, at most
/// `max` bytes. The check uses fstat on the opened descriptor, so a file swapped in
/// between a check and the open cannot slip through.
fn read_private_file(path: &Path, max: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            KeyError::Missing {
                file: path.to_path_buf(),
            }
        } else {
            KeyError::io(path, e)
        }
    })?;
    let meta = file.metadata().map_err(|e| KeyError::io(path, e))?;
    if !meta.is_file() {
        return Err(KeyError::NotARegularFile {
            path: path.to_path_buf(),
        });
    }
    ensure_private_mode(path, meta.permissions().mode())?;
    // Reserve up front and cap the read so the buffer never reallocates: a reallocation
    // would leave an un-zeroized copy of the secret in freed memory.
    let limit = max.saturating_add(1);
    let mut buf = Zeroizing::new(Vec::with_capacity(limit));
    file.take(limit as u64)
        .read_to_end(&mut buf)
        .map_err(|e| KeyError::io(path, e))?;
    if buf.len() > max {
        return Err(KeyError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(buf)
}

/// Creates `dir/name` holding `contents`, mode 0600, atomically and without ever
/// replacing an existing file.
///
/// Steps: write a uniquely named temp file in `dir` (created 0600 via `O_CREAT|O_EXCL`,
/// so there is no window with wider permissions), fsync it, `link(2)` it to the final name,
/// unlink the temp name, fsync the directory. `link` is used instead of `rename` because
/// `rename` silently replaces an existing target, and replacing a KEK file destroys every
/// data key wrapped under it; `link` fails with `EEXIST` instead, which also makes two
/// racing rotations safe.
fn write_new_private_file(dir: &Path, name: &str, contents: &[u8]) -> Result<PathBuf, KeyError> {
    let final_path = dir.join(name);
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| KeyError::Random)?;
    let tmp_path = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));

    let linked = (|| -> Result<(), KeyError> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| KeyError::io(&tmp_path, e))?;
        // umask can only clear bits, but a default ACL or odd filesystem could differ:
        // verify rather than assume.
        let meta = file.metadata().map_err(|e| KeyError::io(&tmp_path, e))?;
        ensure_private_mode(&tmp_path, meta.permissions().mode())?;
        file.write_all(contents)
            .map_err(|e| KeyError::io(&tmp_path, e))?;
        file.sync_all().map_err(|e| KeyError::io(&tmp_path, e))?;
        fs::hard_link(&tmp_path, &final_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                KeyError::FileExists {
                    path: final_path.clone(),
                }
            } else {
                KeyError::io(&final_path, e)
            }
        })
    })();

    // Always drop the temp name, success or not; it only holds age ciphertext (or, for
    // the unlock identity, a 0600 file in the operator's own directory).
    match fs::remove_file(&tmp_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %tmp_path.display(), error = %e, "could not remove temp file");
        }
        _ => {}
    }
    linked?;
    sync_dir(dir)?;
    Ok(final_path)
}

/// fsyncs a directory so that entries created, linked or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io(dir, e))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for the `# created:` comment (age-keygen writes local time with
/// an offset; UTC is equally valid RFC 3339 and needs no time-zone database).
fn rfc3339_utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); H. Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn generated_identity_file_matches_age_keygen_and_reads_back() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("unlock.txt");
        let generated = generate_unlock_identity(&path).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("# created: "));
        assert_eq!(lines[1], format!("# public key: {}", generated.recipient()));
        assert!(lines[2].starts_with("AGE-SECRET-KEY-1"));
        // No temp file left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

        let read = read_unlock_identity(&path).unwrap();
        assert_eq!(
            read.recipient().to_string(),
            generated.recipient().to_string()
        );
        // Debug shows the recipient only.
        assert!(!format!("{read:?}").contains("AGE-SECRET-KEY"));
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("unlock.txt");
        let first = generate_unlock_identity(&path).unwrap();
        assert!(matches!(
            generate_unlock_identity(&path),
            Err(KeyError::FileExists { .. })
        ));
        let read = read_unlock_identity(&path).unwrap();
        assert_eq!(read.recipient().to_string(), first.recipient().to_string());
    }

    #[test]
    fn identity_readable_by_others_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("unlock.txt");
        generate_unlock_identity(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o610] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match read_unlock_identity(&path) {
                Err(KeyError::InsecurePermissions { path: p }) => assert_eq!(p, path),
                other => panic!("mode {mode:o}: expected InsecurePermissions, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_identity_errors_do_not_echo_content() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("bad.txt");
        let write = |s: &str| {
            let _ = fs::remove_file(&path);
            write_new_private_file(tmp.path(), "bad.txt", s.as_bytes()).unwrap();
        };
        write("# comment\nAGE-SECRET-KEY-1NOTAVALIDKEYATALLSECRETSTUFF\n");
        let err = read_unlock_identity(&path).unwrap_err();
        assert!(matches!(err, KeyError::InvalidIdentity { .. }));
        assert!(!err.to_string().contains("SECRETSTUFF"));

        write("# only comments\n");
        assert!(matches!(
            read_unlock_identity(&path),
            Err(KeyError::InvalidIdentity { .. })
        ));

        let a = age::x25519::Identity::generate().to_string();
        let b = age::x25519::Identity::generate().to_string();
        write(&format!("{}\n{}\n", a.expose_secret(), b.expose_secret()));
        assert!(matches!(
            read_unlock_identity(&path),
            Err(KeyError::InvalidIdentity { .. })
        ));

        assert!(matches!(
            read_unlock_identity(&tmp.path().join("absent")),
            Err(KeyError::Missing { .. })
        ));
    }
}
