//! `prune`: see `lifeboat_core::programs::prune`.

use std::process::ExitCode;

use lifeboat_core::programs::prune;

fn main() -> ExitCode {
    lifeboat_core::runtime::main(&prune::SPEC, prune::read, prune::start)
}
