//! `coffre backup` and `coffre restore`: a consistent copy of an instance
//! and its restoration.
//!
//! A backup folder holds the database (SQLite: a `VACUUM INTO` snapshot
//! taken while the service keeps writing), the key files (already
//! age-encrypted; never the unlock identity, which must be kept apart),
//! the policy files, the latest signed checkpoint, `backup.toml` (what and
//! when) and `MANIFEST`, the SHA-256 of every other file in `sha256sum`
//! format (`sha256sum -c MANIFEST` checks it too).
//!
//! A backup folder comes back from storage an attacker may have written
//! to, and the manifest is not signed, so `restore` trusts nothing in it:
//! every name must be one a backup writes (a top-level file of a fixed
//! list, a key file by its exact name pattern, one of the six policy
//! files), every entry a regular file (no symlink), nothing may be there
//! that the manifest does not list; each file is copied once, hashed on
//! the way into a staging file beside its target, and only when every hash
//! matched are the staged files linked to their names (never over an
//! existing file); on any failure the staged files are removed. After a
//! restore, `coffre audit verify --checkpoint` with a checkpoint kept
//! outside the backup says whether the log was rolled back.
//!
//! PostgreSQL: the database is backed up and restored with `pg_dump` /
//! `pg_restore` (or a physical backup), beside the folder; these commands
//! copy what lies with it (keys, policies, the checkpoint) and say so.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Fatal;
use crate::config::{Config, DatabaseUrl, POLICY_FILES};

const MANIFEST: &str = "MANIFEST";
const INFO: &str = "backup.toml";
const DATABASE: &str = "database.sqlite";
const CHECKPOINT: &str = "checkpoint";
const KEYS: &str = "keys";
const POLICIES: &str = "policies";

fn io(what: &str, path: &Path, e: std::io::Error) -> Fatal {
    Fatal::runtime(format!("{what} {} ({})", path.display(), e.kind()))
}

/// A key file's name: `signing.age`, `pseudonym.age` or `kek-vN.age`, or
/// the custodians' public manifest (without it a restored custodians' set
/// could never be unsealed again).
fn is_key_file(name: &str) -> bool {
    matches!(
        name,
        "signing.age" | "pseudonym.age" | crate::crypto::custodians::MANIFEST_FILE
    ) || name
        .strip_prefix("kek-v")
        .and_then(|r| r.strip_suffix(".age"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Where a file of a backup goes, by its name in the manifest; `None` for
/// any name a backup never writes (a path elsewhere, `..`, a nested
/// folder, an unknown file).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Database,
    Checkpoint,
    Info,
    Key(String),
    Policy(String),
}

fn part_of(rel: &str) -> Option<Part> {
    let mut parts = rel.split('/');
    let (first, second, rest) = (parts.next()?, parts.next(), parts.next());
    if rest.is_some() {
        return None;
    }
    match (first, second) {
        (DATABASE, None) => Some(Part::Database),
        (CHECKPOINT, None) => Some(Part::Checkpoint),
        (INFO, None) => Some(Part::Info),
        (KEYS, Some(name)) if is_key_file(name) => Some(Part::Key(name.to_string())),
        (POLICIES, Some(name)) if POLICY_FILES.contains(&name) => {
            Some(Part::Policy(name.to_string()))
        }
        _ => None,
    }
}

/// A regular file, not a symlink (a backup never writes one; a planted one
/// could make a backup copy, or a restore read, a file elsewhere).
fn regular(path: &Path) -> Result<bool, Fatal> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(m.file_type().is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("cannot inspect", path, e)),
    }
}

/// Copies `from` into the new file `to` (mode `mode`, never over an existing
/// file, synced), streaming; returns the SHA-256 of what was copied.
fn copy_hashed(from: &Path, to: &Path, mode: u32) -> Result<String, Fatal> {
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .map_err(|e| io("cannot create", to, e))?;
    let hash = stream(from, Some((&mut dst, to)))?;
    dst.sync_all().map_err(|e| io("cannot write", to, e))?;
    Ok(hash)
}

/// The SHA-256 of `from`, read once (never through a symlink: `O_NOFOLLOW`
/// fails on one, even planted after the folder was listed), each chunk
/// also written to `copy` when given.
fn stream(from: &Path, mut copy: Option<(&mut fs::File, &Path)>) -> Result<String, Fatal> {
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(|e| io("cannot read", from, e))?;
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = src.read(&mut buf).map_err(|e| io("cannot read", from, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        if let Some((dst, to)) = copy.as_mut() {
            dst.write_all(&buf[..n])
                .map_err(|e| io("cannot write", to, e))?;
        }
    }
    Ok(hex::encode(hash.finish().as_ref()))
}

fn sha256_file(path: &Path) -> Result<String, Fatal> {
    stream(path, None)
}

/// Creates `path` (and its parents) when missing; sets `mode` only on a
/// folder this call created, never on one that was there.
fn create_dir(path: &Path, mode: u32) -> Result<(), Fatal> {
    if path.exists() {
        return Ok(());
    }
    fs::create_dir_all(path).map_err(|e| io("cannot create", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io("cannot set permissions on", path, e))
}

fn sync_dir(path: &Path) -> Result<(), Fatal> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", path, e))
}

/// `coffre backup --out DIR`: `DIR` must not exist or be empty.
pub(super) async fn backup(config: &Config, out: &Path) -> Result<(), Fatal> {
    if out.exists()
        && fs::read_dir(out)
            .map_err(|e| io("cannot list", out, e))?
            .next()
            .is_some()
    {
        return Err(Fatal::config(format!(
            "{} is not empty: a backup goes into a new folder",
            out.display()
        )));
    }
    // A backup of a database that is not there would be an empty one,
    // created here: refused (a job run without the service's settings).
    if let DatabaseUrl::Sqlite { path } = &config.database_url
        && !path.is_file()
    {
        return Err(Fatal::config(format!(
            "no database at {}: check COFFRE_DATABASE_URL (the service's settings)",
            path.display()
        )));
    }
    create_dir(out, 0o700)?;
    let store = super::open_store(config).await?;
    // The checkpoint is read before the snapshot, so the snapshot's log
    // always extends it.
    let checkpoint = store
        .audit_latest_checkpoint()
        .await
        .map_err(|e| Fatal::runtime(format!("reading the latest checkpoint: {e}")))?;
    // Taking a copy of the whole database is an act like any other
    // operator's: recorded (and durable) before anything is copied, or not
    // done. The entry is inside the copy.
    let audit = crate::audit::AuditLog::start(store.clone(), config.audit_log_name.clone());
    if let Err(e) = audit
        .record(super::operator_record(
            "backup.take",
            None,
            crate::Clock::system().now(),
        ))
        .await
    {
        store.close().await;
        return Err(Fatal::runtime(format!("refusing to act unaudited: {e}")));
    }
    let snapshot = out.join(DATABASE);
    let database = match &config.database_url {
        DatabaseUrl::Sqlite { .. } => {
            let taken = store.snapshot_into(&snapshot).await;
            store.close().await;
            taken.map_err(|e| Fatal::runtime(format!("database snapshot: {e}")))?;
            fs::set_permissions(&snapshot, fs::Permissions::from_mode(0o600))
                .map_err(|e| io("cannot set permissions on", &snapshot, e))?;
            "sqlite"
        }
        DatabaseUrl::Postgres { .. } => {
            store.close().await;
            "postgres (not in this folder: take it with pg_dump, see docs/operating.md)"
        }
    };
    if let Some(cp) = &checkpoint {
        let to = out.join(CHECKPOINT);
        fs::write(&to, &cp.note).map_err(|e| io("cannot write", &to, e))?;
    }
    // The key files by their exact names, regular files only, still
    // age-encrypted; never the unlock identity (not a key file's name).
    let keys_out = out.join(KEYS);
    create_dir(&keys_out, 0o700)?;
    let mut copied = Vec::new();
    let entries =
        fs::read_dir(&config.keys_dir).map_err(|e| io("cannot list", &config.keys_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io("cannot list", &config.keys_dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_key_file(&name) {
            continue;
        }
        let path = entry.path();
        if !regular(&path)? {
            return Err(Fatal::runtime(format!(
                "{} is not a regular file (a symlink?): refusing to back it up",
                path.display()
            )));
        }
        copy_hashed(&path, &keys_out.join(&name), 0o600)?;
        copied.push(name);
    }
    // A key rotation that retired a version between the snapshot and the
    // copy would leave data keys wrapped under a file the backup lacks.
    if matches!(config.database_url, DatabaseUrl::Sqlite { .. }) {
        let versions = crate::storage::snapshot_kek_versions(&snapshot)
            .await
            .map_err(|e| Fatal::runtime(format!("reading the snapshot's key versions: {e}")))?;
        for v in versions {
            let name = format!("kek-v{v}.age");
            if !copied.contains(&name) {
                return Err(Fatal::runtime(format!(
                    "the snapshot uses KEK version {v} but {name} is not in the keys folder (a key rotation during the backup?): take the backup again"
                )));
            }
        }
    }
    let policies = if config.policies_dir.is_dir() {
        let to = out.join(POLICIES);
        create_dir(&to, 0o755)?;
        for name in POLICY_FILES {
            let path = config.policies_dir.join(name);
            if regular(&path)? {
                copy_hashed(&path, &to.join(name), 0o644)?;
            }
        }
        "copied"
    } else {
        "built in (none copied)"
    };
    let info = format!(
        "# coffre backup\ncoffre_version = \"{}\"\ndatabase = \"{database}\"\nkey_files = {}\npolicies = \"{policies}\"\ncheckpoint_size = {}\n",
        env!("CARGO_PKG_VERSION"),
        copied.len(),
        checkpoint.as_ref().map(|c| c.tree_size).unwrap_or(0),
    );
    fs::write(out.join(INFO), info).map_err(|e| io("cannot write", &out.join(INFO), e))?;
    // The manifest last: it vouches for everything above.
    let mut manifest = String::new();
    for rel in present(out)? {
        manifest.push_str(&format!("{}  {rel}\n", sha256_file(&out.join(&rel))?));
    }
    let to = out.join(MANIFEST);
    fs::write(&to, manifest).map_err(|e| io("cannot write", &to, e))?;
    for dir in [out.to_path_buf(), keys_out, out.join(POLICIES)] {
        if dir.is_dir() {
            sync_dir(&dir)?;
        }
    }
    println!(
        "backup written to {}: database {database}, {} key files, policies {policies}, checkpoint of size {}; the unlock identity is not in it (keep it apart)",
        out.display(),
        copied.len(),
        checkpoint.map(|c| c.tree_size).unwrap_or(0),
    );
    Ok(())
}

/// Every entry of a backup folder but the manifest, as relative paths,
/// two levels deep; anything that is not a regular file or a folder a
/// backup writes is an error (a symlink, a nested folder).
fn present(dir: &Path) -> Result<Vec<String>, Fatal> {
    let mut out = walk(dir, "", true)?;
    for folder in [KEYS, POLICIES] {
        if out.iter().any(|r| r == &format!("{folder}/")) {
            out.extend(walk(&dir.join(folder), &format!("{folder}/"), false)?);
        }
    }
    out.retain(|r| !r.ends_with('/'));
    out.sort();
    Ok(out)
}

/// One level of [`present`]: files as `prefix` + name; at the top, the
/// `keys/` and `policies/` folders as themselves (with a final `/`).
fn walk(d: &Path, prefix: &str, top: bool) -> Result<Vec<String>, Fatal> {
    let mut out = Vec::new();
    for entry in fs::read_dir(d).map_err(|e| io("cannot list", d, e))? {
        let entry = entry.map_err(|e| io("cannot list", d, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{prefix}{name}");
        let kind = entry
            .file_type()
            .map_err(|e| io("cannot inspect", &entry.path(), e))?;
        if kind.is_file() {
            if rel != MANIFEST {
                out.push(rel);
            }
        } else if kind.is_dir() && top && (name == KEYS || name == POLICIES) {
            out.push(format!("{rel}/"));
        } else {
            return Err(Fatal::runtime(format!(
                "backup refused: {rel} is not a file a backup holds (a symlink, or a folder)"
            )));
        }
    }
    Ok(out)
}

/// The manifest's entries, checked for shape only (hashes are checked as
/// the files are copied): each a name a backup writes, once, and nothing
/// present that it does not list.
fn read_manifest(dir: &Path) -> Result<Vec<(String, String, Part)>, Fatal> {
    let path = dir.join(MANIFEST);
    if !regular(&path)? {
        return Err(Fatal::runtime(format!(
            "backup refused: no {MANIFEST} (or not a regular file)"
        )));
    }
    let text = fs::read_to_string(&path).map_err(|e| io("cannot read", &path, e))?;
    let mut entries: Vec<(String, String, Part)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let refuse =
            |why: &str| Fatal::runtime(format!("backup refused: {MANIFEST} line {}: {why}", n + 1));
        let (hash, rel) = line.split_once("  ").ok_or_else(|| refuse("malformed"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse("not a SHA-256"));
        }
        let part = part_of(rel).ok_or_else(|| refuse("names a file a backup never holds"))?;
        if entries.iter().any(|(_, r, _)| r == rel) {
            return Err(refuse("names a file twice"));
        }
        entries.push((hash.to_ascii_lowercase(), rel.to_string(), part));
    }
    for rel in present(dir)? {
        if !entries.iter().any(|(_, r, _)| *r == rel) {
            return Err(Fatal::runtime(format!(
                "backup refused: {rel} is not listed in {MANIFEST}"
            )));
        }
    }
    Ok(entries)
}

/// Where a restored file goes, with its mode.
type Target = (PathBuf, u32);

/// A file copied to a staging name beside its target, linked to the
/// target once every file is checked.
struct Staged {
    staged: PathBuf,
    target: PathBuf,
}

fn unstage(staged: &[Staged]) {
    for s in staged {
        let _ = fs::remove_file(&s.staged);
    }
}

/// `coffre restore --from DIR`: into the configured database, keys folder
/// and policies folder, none of which may already hold what it restores.
pub(super) async fn restore(config: &Config, from: &Path) -> Result<(), Fatal> {
    let entries = read_manifest(from)?;
    let has = |p: &Part| entries.iter().any(|(_, _, q)| q == p);
    let db_target = match &config.database_url {
        DatabaseUrl::Sqlite { path } => {
            if !has(&Part::Database) {
                return Err(Fatal::config(
                    "this backup holds no SQLite database (a PostgreSQL instance's): restore it with pg_restore",
                ));
            }
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let p = PathBuf::from(format!("{}{suffix}", path.display()));
                if fs::symlink_metadata(&p).is_ok() {
                    return Err(Fatal::config(format!(
                        "{} exists: restore into a fresh location (move the old database away first)",
                        p.display()
                    )));
                }
            }
            Some(path.clone())
        }
        DatabaseUrl::Postgres { .. } => None,
    };
    let restore_policies = !config.policies_dir.exists();
    // Where each file goes; files that stay behind (the info file, the
    // checkpoint, a PostgreSQL instance's database) are still hashed.
    let mut plan: Vec<(String, String, Option<Target>)> = Vec::new();
    for (hash, rel, part) in &entries {
        let target = match part {
            Part::Database => db_target.clone().map(|p| (p, 0o600)),
            Part::Key(name) => Some((config.keys_dir.join(name), 0o600)),
            Part::Policy(name) if restore_policies => Some((config.policies_dir.join(name), 0o644)),
            Part::Policy(_) | Part::Checkpoint | Part::Info => None,
        };
        if let Some((t, _)) = &target
            && fs::symlink_metadata(t).is_ok()
        {
            return Err(Fatal::config(format!(
                "{} exists: restore into empty locations",
                t.display()
            )));
        }
        plan.push((hash.clone(), rel.clone(), target));
    }
    if let Some(path) = &db_target
        && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
    {
        create_dir(parent, 0o700)?;
    }
    create_dir(&config.keys_dir, 0o700)?;
    if restore_policies && has_policies(&entries) {
        create_dir(&config.policies_dir, 0o755)?;
    }
    // Each file read once: hashed while it is copied to a staging file
    // (or, when it stays behind, while it is read).
    let mut staged: Vec<Staged> = Vec::new();
    for (hash, rel, target) in &plan {
        let source = from.join(rel);
        let got = match target {
            Some((target, mode)) => {
                let dir = target.parent().unwrap_or(Path::new("."));
                let name = target.file_name().unwrap_or_default().to_string_lossy();
                let stage = dir.join(format!(".{name}.restoring"));
                let copied = copy_hashed(&source, &stage, *mode);
                if copied.is_ok() {
                    staged.push(Staged {
                        staged: stage,
                        target: target.clone(),
                    });
                }
                match copied {
                    Ok(h) => h,
                    Err(e) => {
                        unstage(&staged);
                        return Err(e);
                    }
                }
            }
            None => match sha256_file(&source) {
                Ok(h) => h,
                Err(e) => {
                    unstage(&staged);
                    return Err(e);
                }
            },
        };
        if got != *hash {
            unstage(&staged);
            return Err(Fatal::runtime(format!(
                "backup refused: {rel} does not match its SHA-256 in {MANIFEST} (damaged or altered); nothing was restored"
            )));
        }
    }
    // Every file checked: the staged copies take their names, never over
    // an existing file (a hard link fails if the name is taken).
    for (i, s) in staged.iter().enumerate() {
        if let Err(e) = fs::hard_link(&s.staged, &s.target) {
            for done in &staged[..i] {
                let _ = fs::remove_file(&done.target);
            }
            unstage(&staged);
            return Err(io("cannot create", &s.target, e));
        }
    }
    unstage(&staged);
    let keys = entries
        .iter()
        .filter(|(_, _, p)| matches!(p, Part::Key(_)))
        .count();
    println!(
        "restored from {}: {}{keys} key files{}. Check now that the log was not rolled back: coffre audit verify --checkpoint FILE, with a checkpoint kept outside this backup.",
        from.display(),
        if db_target.is_some() {
            "the database, "
        } else {
            "(PostgreSQL: restore the database with pg_restore first) "
        },
        if restore_policies && has_policies(&entries) {
            ", the policies"
        } else {
            ""
        },
    );
    Ok(())
}

fn has_policies(entries: &[(String, String, Part)]) -> bool {
    entries.iter().any(|(_, _, p)| matches!(p, Part::Policy(_)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_a_backup_writes_have_a_place() {
        for (rel, part) in [
            ("database.sqlite", Some(Part::Database)),
            ("checkpoint", Some(Part::Checkpoint)),
            ("backup.toml", Some(Part::Info)),
            ("keys/signing.age", Some(Part::Key("signing.age".into()))),
            ("keys/kek-v12.age", Some(Part::Key("kek-v12.age".into()))),
            (
                "policies/policy.csv",
                Some(Part::Policy("policy.csv".into())),
            ),
        ] {
            assert_eq!(part_of(rel), part, "{rel}");
        }
        for rel in [
            "keys//etc/cron.d/x",
            "keys/../../etc/passwd",
            "keys/sub/kek-v1.age",
            "keys/unlock.key",
            "keys/kek-v.age",
            "keys/kek-vx.age",
            "policies//etc/passwd",
            "policies/other.toml",
            "/etc/passwd",
            "../database.sqlite",
            "keys",
            "MANIFEST",
            "",
        ] {
            assert_eq!(part_of(rel), None, "{rel}");
        }
    }
}
