//! `monitor`: see `lifeboat_core::programs::monitor`.

use std::process::ExitCode;

use lifeboat_core::programs::monitor;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&monitor::SPEC, monitor::read, monitor::start)
}
