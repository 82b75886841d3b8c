//! `console`: see `lifeboat_core::programs::console`.

use std::process::ExitCode;

use lifeboat_core::programs::console;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&console::SPEC, console::read, console::start)
}
