//! The programs, one module each: their specification (`--help`), configuration, and work.
//! Binaries in `functions/` only call [`crate::runtime::main`] with these.

pub mod db_backup;
pub mod health;
pub mod monitor;
pub mod prune;
pub mod restore;
pub mod storage_backup;
