//! The one place the wall clock is read. Domain logic takes `now` as an
//! argument; handlers get it from here, and tests pin or move it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::domain::Timestamp;

#[derive(Clone, Default)]
pub struct Clock {
    fixed: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { fixed: None }
    }

    /// A clock that stays at `now` until [`Clock::set`] or [`Clock::advance`].
    pub fn fixed(now: Timestamp) -> Self {
        Self {
            fixed: Some(Arc::new(AtomicI64::new(now))),
        }
    }

    pub fn now(&self) -> Timestamp {
        match &self.fixed {
            Some(t) => t.load(Ordering::SeqCst),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }

    /// Moves a fixed clock; no effect on the system clock.
    pub fn set(&self, now: Timestamp) {
        if let Some(t) = &self.fixed {
            t.store(now, Ordering::SeqCst);
        }
    }

    pub fn advance(&self, seconds: i64) {
        if let Some(t) = &self.fixed {
            t.fetch_add(seconds, Ordering::SeqCst);
        }
    }
}
