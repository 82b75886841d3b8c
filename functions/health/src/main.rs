//! `health`: see `lifeboat_core::programs::health`.

use std::process::ExitCode;

use lifeboat_core::programs::health;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&health::SPEC, health::read, health::start)
}
