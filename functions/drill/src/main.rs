//! `drill`: see `lifeboat_core::programs::drill`.

use std::process::ExitCode;

use lifeboat_core::programs::drill;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&drill::SPEC, drill::read, drill::start)
}
