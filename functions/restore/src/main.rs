//! `restore`: see `lifeboat_core::programs::restore`.

use std::process::ExitCode;

use lifeboat_core::programs::restore;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&restore::SPEC, restore::read, restore::start)
}
