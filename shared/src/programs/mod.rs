//! The programs, one module each: their specification (`--help`), configuration, and work.
//! Binaries in `functions/` only call [`crate::runtime::main`] with these.

pub mod db_backup;
pub mod health;
pub mod monitor;
pub mod prune;
pub mod restore;
pub mod storage_backup;

use chrono::Utc;

use crate::events::{Outcome, RunResult};
use crate::runtime::Services;

/// The result of a program whose work is not built yet: an honest failure.
pub(crate) fn not_yet(services: &Services, program: &str, started: chrono::DateTime<Utc>) -> RunResult {
    let mut r = services.result(program, started);
    r.outcome = Outcome::Failure;
    r.summary = format!("{program}: not yet implemented in this version");
    r.finished_at = Utc::now();
    r
}
