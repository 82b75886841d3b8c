//! The configuration reader: any environment and command line is either a configuration or a
//! list of problems, for every program, and never a panic. Input: the first line is the
//! command line (split on spaces), each further line one `NAME=VALUE`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_core::config::Env;
use lifeboat_core::programs::{db_backup, health, monitor, prune, restore, storage_backup};
use lifeboat_core::runtime::configure;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split('\n');
    let args: Vec<String> =
        lines.next().unwrap_or_default().split(' ').filter(|a| !a.is_empty()).map(str::to_owned).collect();
    let env = Env::from_pairs(lines.filter_map(|l| l.split_once('=')));
    let problems = |r: Result<_, lifeboat_core::config::ConfigError>| {
        if let Err(e) = r {
            assert!(!e.problems.is_empty(), "an error names its problems");
            let _ = e.to_string();
        }
    };
    problems(configure(&db_backup::SPEC, &args, &env, db_backup::read).map(|_| ()));
    problems(configure(&storage_backup::SPEC, &args, &env, storage_backup::read).map(|_| ()));
    problems(configure(&prune::SPEC, &args, &env, prune::read).map(|_| ()));
    problems(configure(&health::SPEC, &args, &env, health::read).map(|_| ()));
    problems(configure(&monitor::SPEC, &args, &env, monitor::read).map(|_| ()));
    problems(configure(&restore::SPEC, &args, &env, restore::read).map(|_| ()));
});
