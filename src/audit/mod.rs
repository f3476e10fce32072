//! The tamper-evident audit log: RFC 9162 Merkle tree, C2SP signed
//! checkpoints, inclusion and consistency proofs.

pub mod entry;
pub mod indexes;
mod integrator;
pub mod log;
pub mod merkle;
pub mod note;
pub mod tiles;
pub mod verify;
pub mod witness;

pub use entry::{AuditEntry, AuditRecord, Decision};
pub use log::{AuditError, AuditLog, AuditMetrics};

/// The published test vectors, copied into the repository with their licence.
#[cfg(test)]
pub(crate) fn test_vectors_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}
