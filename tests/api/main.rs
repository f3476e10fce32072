#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The one integration-test binary: drives the real router (and, where the
//! process matters, the real binary) on SQLite and PostgreSQL.

#[allow(dead_code)]
mod support;

mod alerts;
mod architecture;
mod audit;
mod backup;
mod binary;
mod browser;
mod cli;
mod consents;
mod custodians;
mod disclosure;
mod errors;
mod extracts;
mod faults;
mod independent;
mod mandates;
mod matrix;
mod matrix_mandates;
mod metrics;
mod model;
mod notice_events;
mod notices;
mod oidc;
mod ops;
mod pages;
mod partner;
mod races;
mod review;
mod rights;
mod rotation;
mod seed;
mod session;
mod sources;
mod stats;
mod storage;
mod tiles;
mod trust;
mod vault;
mod witness;
