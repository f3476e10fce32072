//! `coffre backup` and `coffre restore`: a consistent copy of an instance
//! and its restoration.
//!
//! A backup folder holds the database (SQLite: a `VACUUM INTO` snapshot
//! taken while the service keeps writing), the key files (already
//! age-encrypted; never the unlock identity, which must be kept apart),
//! the policy files, the latest signed checkpoint, `backup.toml` (what and
//! when) and `MANIFEST`, the SHA-256 of every other file in `sha256sum`
//! format (`sha256sum -c MANIFEST` checks it too). `restore` refuses a
//! folder whose files differ by one byte from the manifest, hold a file it
//! does not list or lack one it does, and never overwrites a database or
//! key file in place. After a restore, `coffre audit verify --checkpoint`
//! with a checkpoint kept outside the backup says whether the log was
//! rolled back.
//!
//! PostgreSQL: the database is backed up and restored with `pg_dump` /
//! `pg_restore` (or a physical backup); these commands copy what lies
//! beside it (keys, policies, the checkpoint) and say so.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Fatal;
use crate::config::{Config, DatabaseUrl};

const MANIFEST: &str = "MANIFEST";
const INFO: &str = "backup.toml";
const DATABASE: &str = "database.sqlite";
const CHECKPOINT: &str = "checkpoint";
const KEYS: &str = "keys";
const POLICIES: &str = "policies";

fn io(what: &str, path: &Path, e: std::io::Error) -> Fatal {
    Fatal::runtime(format!("{what} {} ({})", path.display(), e.kind()))
}

fn sha256_file(path: &Path) -> Result<String, Fatal> {
    let bytes = fs::read(path).map_err(|e| io("cannot read", path, e))?;
    Ok(hex::encode(
        ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref(),
    ))
}

/// The regular files of `dir` whose names end with one of `suffixes`
/// (all when empty), sorted.
fn files_of(dir: &Path, suffixes: &[&str]) -> Result<Vec<PathBuf>, Fatal> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io("cannot list", dir, e))? {
        let entry = entry.map_err(|e| io("cannot list", dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_file() && (suffixes.is_empty() || suffixes.iter().any(|s| name.ends_with(s))) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `from` to the new file `to` with `mode` (refusing to overwrite).
fn copy_new(from: &Path, to: &Path, mode: u32) -> Result<(), Fatal> {
    let bytes = fs::read(from).map_err(|e| io("cannot read", from, e))?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(to)
        .map_err(|e| io("cannot create", to, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("cannot write", to, e))
}

fn create_dir(path: &Path, mode: u32) -> Result<(), Fatal> {
    fs::create_dir_all(path).map_err(|e| io("cannot create", path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io("cannot set permissions on", path, e))
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
    create_dir(out, 0o700)?;
    let store = super::open_store(config).await?;
    // The checkpoint is read before the snapshot, so the snapshot's log
    // always extends it.
    let checkpoint = store
        .audit_latest_checkpoint()
        .await
        .map_err(|e| Fatal::runtime(format!("reading the latest checkpoint: {e}")))?;
    let database = match &config.database_url {
        DatabaseUrl::Sqlite { .. } => {
            let to = out.join(DATABASE);
            let snapshot = store.snapshot_into(&to).await;
            store.close().await;
            snapshot.map_err(|e| Fatal::runtime(format!("database snapshot: {e}")))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o600))
                .map_err(|e| io("cannot set permissions on", &to, e))?;
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
    // The key files, still age-encrypted; never the unlock identity.
    let keys_out = out.join(KEYS);
    create_dir(&keys_out, 0o700)?;
    let unlock = fs::canonicalize(&config.unlock_identity_file).ok();
    let mut key_files = 0;
    for path in files_of(&config.keys_dir, &[".age"])? {
        if fs::canonicalize(&path).ok() == unlock {
            continue;
        }
        let name = path.file_name().unwrap_or_default();
        copy_new(&path, &keys_out.join(name), 0o600)?;
        key_files += 1;
    }
    let policies = if config.policies_dir.is_dir() {
        let to = out.join(POLICIES);
        create_dir(&to, 0o755)?;
        for path in files_of(&config.policies_dir, &[])? {
            let name = path.file_name().unwrap_or_default();
            copy_new(&path, &to.join(name), 0o644)?;
        }
        "copied"
    } else {
        "built in (none copied)"
    };
    let info = format!(
        "# coffre backup\ncoffre_version = \"{}\"\ndatabase = \"{database}\"\nkey_files = {key_files}\npolicies = \"{policies}\"\ncheckpoint_size = {}\n",
        env!("CARGO_PKG_VERSION"),
        checkpoint.as_ref().map(|c| c.tree_size).unwrap_or(0),
    );
    fs::write(out.join(INFO), info).map_err(|e| io("cannot write", &out.join(INFO), e))?;
    // The manifest last: it vouches for everything above.
    let mut manifest = String::new();
    for rel in listed(out)? {
        manifest.push_str(&format!("{}  {rel}\n", sha256_file(&out.join(&rel))?));
    }
    let to = out.join(MANIFEST);
    fs::write(&to, manifest).map_err(|e| io("cannot write", &to, e))?;
    println!(
        "backup written to {}: database {database}, {key_files} key files, policies {policies}, checkpoint of size {}; the unlock identity is not in it (keep it apart)",
        out.display(),
        checkpoint.map(|c| c.tree_size).unwrap_or(0),
    );
    Ok(())
}

/// Every file of a backup folder but the manifest, as relative paths.
fn listed(dir: &Path) -> Result<Vec<String>, Fatal> {
    let mut out = Vec::new();
    for top in files_of(dir, &[])? {
        let name = top.file_name().unwrap_or_default().to_string_lossy();
        if name != MANIFEST {
            out.push(name.into_owned());
        }
    }
    for sub in [KEYS, POLICIES] {
        let path = dir.join(sub);
        if path.is_dir() {
            for f in files_of(&path, &[])? {
                let name = f.file_name().unwrap_or_default().to_string_lossy();
                out.push(format!("{sub}/{name}"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checks `dir` against its manifest: every listed file there with its
/// hash, nothing unlisted.
fn check_manifest(dir: &Path) -> Result<Vec<String>, Fatal> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|e| io("cannot read", &path, e))?;
    let mut expected = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((hash, rel)) = line.split_once("  ") else {
            return Err(Fatal::runtime(format!(
                "backup refused: {MANIFEST} line {} is malformed",
                n + 1
            )));
        };
        if rel.contains("..") || rel.starts_with('/') {
            return Err(Fatal::runtime(format!(
                "backup refused: {MANIFEST} line {} names a path outside the folder",
                n + 1
            )));
        }
        let file = dir.join(rel);
        if !file.is_file() {
            return Err(Fatal::runtime(format!(
                "backup refused: {rel} is listed in {MANIFEST} but missing"
            )));
        }
        if sha256_file(&file)? != hash {
            return Err(Fatal::runtime(format!(
                "backup refused: {rel} does not match its SHA-256 in {MANIFEST} (damaged or altered)"
            )));
        }
        expected.push(rel.to_string());
    }
    expected.sort();
    for rel in listed(dir)? {
        if expected.binary_search(&rel).is_err() {
            return Err(Fatal::runtime(format!(
                "backup refused: {rel} is not listed in {MANIFEST}"
            )));
        }
    }
    Ok(expected)
}

/// `coffre restore --from DIR`: into the configured database, keys folder
/// and policies folder, none of which may already hold what it restores.
pub(super) async fn restore(config: &Config, from: &Path) -> Result<(), Fatal> {
    let files = check_manifest(from)?;
    let has = |rel: &str| files.iter().any(|f| f == rel);
    // Everything is checked before anything is written.
    let db_target = match &config.database_url {
        DatabaseUrl::Sqlite { path } => {
            if !has(DATABASE) {
                return Err(Fatal::config(
                    "this backup holds no SQLite database (a PostgreSQL instance's): restore it with pg_restore",
                ));
            }
            for p in [
                path.clone(),
                PathBuf::from(format!("{}-wal", path.display())),
            ] {
                if p.exists() {
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
    let key_files: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with(&format!("{KEYS}/")))
        .collect();
    for rel in &key_files {
        let target = config
            .keys_dir
            .join(rel.trim_start_matches(&format!("{KEYS}/")));
        if target.exists() {
            return Err(Fatal::config(format!(
                "{} exists: restore into an empty keys folder",
                target.display()
            )));
        }
    }
    let policy_files: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with(&format!("{POLICIES}/")))
        .collect();
    let restore_policies = !policy_files.is_empty() && !config.policies_dir.exists();
    if let Some(path) = &db_target {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent, 0o700)?;
        }
        copy_new(&from.join(DATABASE), path, 0o600)?;
    }
    create_dir(&config.keys_dir, 0o700)?;
    for rel in &key_files {
        let name = rel.trim_start_matches(&format!("{KEYS}/"));
        copy_new(&from.join(rel), &config.keys_dir.join(name), 0o600)?;
    }
    if restore_policies {
        create_dir(&config.policies_dir, 0o755)?;
        for rel in &policy_files {
            let name = rel.trim_start_matches(&format!("{POLICIES}/"));
            copy_new(&from.join(rel), &config.policies_dir.join(name), 0o644)?;
        }
    }
    println!(
        "restored from {}: {}{} key files{}. Check now that the log was not rolled back: coffre audit verify --checkpoint FILE, with a checkpoint kept outside this backup.",
        from.display(),
        if db_target.is_some() {
            "the database, "
        } else {
            "(PostgreSQL: restore the database with pg_restore first) "
        },
        key_files.len(),
        if restore_policies {
            ", the policies"
        } else {
            ""
        },
    );
    Ok(())
}
