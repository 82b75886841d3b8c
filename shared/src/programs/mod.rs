//! The programs, one module each: its command line (`Cli`, a clap `Parser` whose doc comment says
//! what the program does), its specification (`SPEC`: name and variables), its settings (`read`),
//! and its work (`start`, then [`crate::runtime::Program`]). Binaries in `functions/` only call
//! [`crate::runtime::main`] with these.

pub mod console;
pub mod db_backup;
pub mod drill;
pub mod health;
pub mod monitor;
pub mod prune;
pub mod restore;
pub mod storage_backup;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::config::{Env, Reader};
    use crate::runtime::{Invocation, Mode, ProgramSpec, configure};

    /// What each program's command line answers, from its own declaration.
    struct Answers {
        help: String,
        version: String,
        once: Result<Mode, crate::config::ConfigError>,
    }

    /// `--help`, `--version` and a run with `--once ARGS` (in an environment that is valid
    /// for every program) of one program.
    fn answers<A: Parser, C>(
        spec: &ProgramSpec,
        read: fn(&mut Reader<'_>, Option<A>) -> Option<C>,
        args: &[&str],
    ) -> Answers {
        let env = Env::from_pairs([
            ("HOME", "/tmp"),
            ("PGHOST", "/tmp"),
            ("SOURCE_BUCKETS", "media"),
            ("LIFEBOAT_DESTINATION", "gs://backups-1"),
        ]);
        let print = |flag: &str| match configure(spec, [flag], &env, read) {
            Ok(Invocation::Print(text)) => text,
            Ok(Invocation::Run { .. }) => panic!("{}: {flag} ran", spec.name),
            Err(e) => panic!("{}: {flag}: {e}", spec.name),
        };
        let once =
            configure(spec, std::iter::once("--once").chain(args.iter().copied()), &env, read).map(|i| match i {
                Invocation::Run { mode, .. } => mode,
                Invocation::Print(text) => panic!("{}: printed {text}", spec.name),
            });
        Answers { help: print("--help"), version: print("--version"), once }
    }

    #[test]
    fn every_program_declares_one_command_line_with_help_version_and_once() {
        let all = [
            (&super::db_backup::SPEC, answers(&super::db_backup::SPEC, super::db_backup::read, &[])),
            (&super::storage_backup::SPEC, answers(&super::storage_backup::SPEC, super::storage_backup::read, &[])),
            (&super::prune::SPEC, answers(&super::prune::SPEC, super::prune::read, &["--dry-run"])),
            (&super::health::SPEC, answers(&super::health::SPEC, super::health::read, &[])),
            (&super::monitor::SPEC, answers(&super::monitor::SPEC, super::monitor::read, &[])),
            (&super::console::SPEC, answers(&super::console::SPEC, super::console::read, &[])),
            (&super::drill::SPEC, answers(&super::drill::SPEC, super::drill::read, &[])),
            (
                &super::restore::SPEC,
                answers(&super::restore::SPEC, super::restore::read, &["list", "--database", "app"]),
            ),
        ];
        for (spec, a) in all {
            let name = spec.name;
            assert!(a.help.starts_with(&format!("{name} — ")), "{name}:\n{}", a.help);
            assert!(a.help.contains(&format!("Usage: {name} ")), "{name}:\n{}", a.help);
            assert!(a.help.contains("--once") && a.help.contains("CLOUD_RUN_JOB"), "{name}:\n{}", a.help);
            assert!(a.help.contains("Exit codes: 0 success, 1 failure, 2 bad configuration."), "{name}");
            for v in spec.all_vars() {
                let line = match (v.default, v.secret) {
                    (_, true) => format!("  {} (secret)\n      {}\n", v.name, v.help),
                    (Some(d), false) => format!("  {} (default: {d})\n      {}\n", v.name, v.help),
                    (None, false) => format!("  {}\n      {}\n", v.name, v.help),
                };
                assert!(a.help.contains(&line), "{name} --help lacks {line:?}");
            }
            assert_eq!(a.version, format!("{name} {}\n", env!("CARGO_PKG_VERSION")));
            assert_eq!(a.once.unwrap_or_else(|e| panic!("{name} --once: {e}")), Mode::Job);
        }
    }

    #[test]
    fn program_options_are_in_their_help() {
        let prune = super::prune::SPEC.help::<super::prune::Cli>();
        assert!(prune.contains("--dry-run") && prune.contains("--force"), "{prune}");
        let restore = super::restore::SPEC.help::<super::restore::Cli>();
        for command in ["list", "db", "bucket"] {
            assert!(restore.contains(&format!("\n  {command} ")), "{command} missing:\n{restore}");
        }
        let storage = super::storage_backup::SPEC.help::<super::storage_backup::Cli>();
        assert!(storage.contains("Scale-out: as a Cloud Run job with several tasks"), "{storage}");
    }
}
