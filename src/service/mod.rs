//! The use cases: one function per thing a person, a partner or a job does.
//!
//! A use case takes typed input and `now`, opens the unit of work, asks the
//! one access decision, writes the audit record before anything is
//! disclosed or changed, and returns a typed view. This layer is the only
//! caller of storage and of the audit log: `http/` and `web/` call it and
//! render what it returns, so two routes that do the same thing share one
//! rule.

pub mod access;
pub mod consents;
pub mod extracts;
pub mod mandates;
pub mod rights;
pub mod vault;
