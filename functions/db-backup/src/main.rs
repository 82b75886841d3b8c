//! `db-backup`: see `lifeboat_core::programs::db_backup`.

use std::process::ExitCode;

use lifeboat_core::programs::db_backup;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&db_backup::SPEC, db_backup::read, db_backup::start)
}
