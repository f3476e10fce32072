//! The tamper-evident audit log: RFC 9162 Merkle tree, C2SP signed
//! checkpoints, inclusion and consistency proofs.

pub mod merkle;
pub mod note;
