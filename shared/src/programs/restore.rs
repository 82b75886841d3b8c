//! `restore`: Restores a database backup (streaming into pg_restore) or a bucket snapshot (server-side copies), verifying checksums.
//!
//! The work is chosen by a subcommand (after the runtime's `--once`). Bucket snapshots:
//! `restore bucket …`, implemented in [`crate::snapshot::restore`].

use async_trait::async_trait;
use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::config::{Reader, vars};
use crate::events::RunResult;
use crate::runtime::{Program, ProgramSpec, RunContext, Services, StartError};
use crate::snapshot::restore::{self as bucket_restore, BucketArgs};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec {
    name: "restore",
    about: "Restores a database backup (streaming into pg_restore) or a bucket snapshot (server-side copies), verifying checksums.",
    usage: bucket_restore::USAGE,
    vars: &[vars::POSTGRES],
};

/// The command line after `--once`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "restore",
    no_binary_name = true,
    disable_help_flag = true,
    disable_version_flag = true,
    disable_help_subcommand = true,
    color = clap::ColorChoice::Never
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `restore` does.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Restore a bucket snapshot.
    Bucket(BucketArgs),
}

/// Settings of `restore`.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub command: Command,
}

/// Reads the settings: the work from the arguments.
pub fn read(r: &mut Reader<'_>, args: &[String]) -> Option<Config> {
    match Cli::try_parse_from(args) {
        Ok(cli) => {
            let Command::Bucket(a) = &cli.command;
            if let Err(e) = a.target_location() {
                r.problem("arguments", e);
                return None;
            }
            Some(Config { command: cli.command })
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.split("\n\n").next().unwrap_or_default();
            let first = first.trim_start_matches("error: ").split_whitespace().collect::<Vec<_>>().join(" ");
            let message =
                if args.is_empty() { "a command is required: bucket --source-bucket B …".to_owned() } else { first };
            r.problem("arguments", format!("{message} (run with --help for the commands)"));
            None
        }
    }
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
    config: Config,
}

/// Builds the program.
pub async fn start(services: Services, config: Config) -> Result<App, StartError> {
    Ok(App { services, config })
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        let result = self.services.result(SPEC.name, ctx.started);
        let mut result = match &self.config.command {
            Command::Bucket(args) => bucket_restore::run(&self.services, args, &ctx, result).await,
        };
        result.finished_at = Utc::now();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn parse(args: &[&str]) -> Result<Config, crate::config::ConfigError> {
        let env = Env::default();
        let mut r = Reader::new(&env);
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let c = read(&mut r, &args);
        r.finish()?;
        Ok(c.expect("a config when there is no problem"))
    }

    #[test]
    fn bucket_subcommand_parses() {
        let c = parse(&["bucket", "--source-bucket", "media", "--target-bucket", "t-1", "--dry-run"]).expect("bucket");
        let Command::Bucket(a) = c.command;
        assert!(a.dry_run);
        for (args, needle) in [
            (&[][..], "a command is required"),
            (&["bucket", "--source-bucket", "m"][..], "--target-bucket"),
            (&["bucket", "--source-bucket", "m", "--target-bucket", "Bad_Bucket"][..], "not a valid bucket"),
        ] {
            let e = parse(args).expect_err("bad");
            assert_eq!(e.problems.len(), 1, "{e}");
            assert!(e.problems[0].message.contains(needle), "{args:?}: {e}");
        }
    }
}
