//! A program's declaration, and reading its command line and environment into an [`Invocation`].
//!
//! Every program declares its command line once, as a clap `Parser` (derive) that flattens
//! [`Args`] — the runtime's own `--once` — beside its own flags and subcommands; the doc comment
//! of that `Parser` says what the program does. The runtime names and versions the command and
//! adds an epilogue built from the program's [`Var`] declarations (modes, exit codes, every
//! environment variable with its default or "secret", and its meaning), so `--help` and
//! `--version` come from clap and the variables they list are the ones read.
//!
//! A wrong command line is a configuration problem like a wrong variable: it is recorded as the
//! problem `arguments`, beside every problem of the environment, and reported in one message
//! (exit code 2).

use std::ffi::OsString;

use clap::error::ErrorKind as ClapErrorKind;
use clap::{CommandFactory, FromArgMatches as _, Parser};

use crate::config::{Common, ConfigError, Env, Reader, Var, describe_vars};

/// The name under which a wrong command line is reported among the configuration problems.
pub const ARGUMENTS: &str = "arguments";

/// What a binary is besides its command line: the name it runs and reports under, and the
/// variables it reads.
#[derive(Debug)]
pub struct ProgramSpec {
    /// Binary name (also the `program` of its result events).
    pub name: &'static str,
    /// The variable groups it reads (the common group is added by the runtime).
    pub vars: &'static [&'static [&'static Var]],
}

impl ProgramSpec {
    /// Every variable this program reads, common ones first.
    pub fn all_vars(&self) -> Vec<&'static Var> {
        let mut out: Vec<&'static Var> = crate::config::vars::COMMON.to_vec();
        for group in self.vars {
            for v in *group {
                if !out.iter().any(|o| o.name == v.name) {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The clap command of the program's `Parser` `A`, named and versioned as this program, with
    /// the modes, exit codes and environment variables after the options.
    pub fn command<A: CommandFactory>(&self) -> clap::Command {
        A::command()
            .name(self.name)
            .bin_name(self.name)
            .version(env!("CARGO_PKG_VERSION"))
            .no_binary_name(true)
            .color(clap::ColorChoice::Never)
            .help_template("{name} — {about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}")
            .after_help(self.epilogue())
    }

    /// The `--help` text of the program's `Parser` `A`.
    pub fn help<A: CommandFactory>(&self) -> String {
        self.command::<A>().render_long_help().to_string()
    }

    fn epilogue(&self) -> String {
        format!(
            "Modes:\n  job mode      with --once, or when CLOUD_RUN_JOB is set: run once, publish the result, exit\n  service mode  with PORT set (and no --once): serve HTTP on PORT: GET /healthz, POST /run\n\nExit codes: 0 success, 1 failure, 2 bad configuration.\n\nEnvironment variables:\n{}",
            describe_vars(&self.all_vars()).trim_end()
        )
    }
}

/// The runtime's flags, flattened (`#[command(flatten)]`) into every program's `Parser`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct Args {
    /// Run once and exit (job mode; implied when CLOUD_RUN_JOB is set).
    #[arg(long, global = true)]
    pub once: bool,
}

/// How the binary was asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Once, then exit.
    Job,
    /// Serve HTTP on this port.
    Service(u16),
}

/// The outcome of reading arguments and environment.
// Made once per process and matched at once: boxing the settings would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Invocation<C> {
    /// `--help` or `--version`: print this and exit 0.
    Print(String),
    /// Run.
    Run {
        /// Mode.
        mode: Mode,
        /// Shared settings.
        common: Common,
        /// Program settings.
        config: C,
    },
}

/// What the command line asks for.
enum CommandLine<A> {
    /// Help or version text.
    Print(String),
    /// The runtime's flags and the program's whole command line.
    Run(Args, A),
}

/// A command line that does not parse.
struct Wrong {
    /// The problem, one line.
    problem: String,
    /// The runtime's flags as far as they can be told (before the error), `None` if not at all.
    runtime: Option<Args>,
}

/// Parses `args` (without the program name) with the program's `Parser` `A`.
fn parse<A: Parser>(spec: &ProgramSpec, args: Vec<OsString>) -> Result<CommandLine<A>, Wrong> {
    let command = spec.command::<A>();
    let parsed = command.clone().try_get_matches_from(&args).and_then(|matches| {
        // `A` flattens `Args`, so the runtime's flags are read from the same matches.
        Ok(CommandLine::Run(Args::from_arg_matches(&matches)?, A::from_arg_matches(&matches)?))
    });
    match parsed {
        Ok(line) => Ok(line),
        Err(e) if matches!(e.kind(), ClapErrorKind::DisplayHelp | ClapErrorKind::DisplayVersion) => {
            Ok(CommandLine::Print(e.render().to_string()))
        }
        Err(e) => {
            // clap's lenient mode keeps what parsed before the error: whether `--once` was given.
            let lenient = command.clone().ignore_errors(true).try_get_matches_from(&args);
            let runtime = lenient.ok().and_then(|m| Args::from_arg_matches(&m).ok());
            Err(Wrong { problem: problem(&e, &command), runtime })
        }
    }
}

/// One line for a wrong command line. clap renders its message, then tips, then the usage and
/// advice to run `--help`; the problem keeps the message and the tips (the configuration error
/// ends with the advice already, and the usage is in `--help`).
fn problem(e: &clap::Error, command: &clap::Command) -> String {
    let missing =
        matches!(e.kind(), ClapErrorKind::MissingSubcommand | ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand);
    if missing && command.has_subcommands() {
        let names: Vec<&str> = command.get_subcommands().map(clap::Command::get_name).collect();
        return format!("a command is required: one of {} (run with --help for the commands)", names.join(", "));
    }
    let rendered = e.render().to_string();
    let mut paragraphs = rendered.split("\n\n").map(str::trim);
    let message = paragraphs.next().unwrap_or_default().trim_start_matches("error:").trim();
    let mut line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    for tip in paragraphs.filter(|p| p.starts_with("tip:")) {
        line.push_str("; ");
        line.push_str(&tip.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    line
}

/// Reads arguments (without the program name) and environment; every problem is reported at
/// once. `read` gets the program's parsed command line, or `None` when it is wrong (that
/// problem is already recorded), and records the problems of the program's variables.
pub fn configure<A: Parser, C>(
    spec: &ProgramSpec,
    args: impl IntoIterator<Item = impl Into<OsString>>,
    env: &Env,
    read: fn(&mut Reader<'_>, Option<A>) -> Option<C>,
) -> Result<Invocation<C>, ConfigError> {
    let mut r = Reader::new(env);
    let (runtime, cli) = match parse::<A>(spec, args.into_iter().map(Into::into).collect()) {
        Ok(CommandLine::Print(text)) => return Ok(Invocation::Print(text)),
        Ok(CommandLine::Run(runtime, cli)) => (Some(runtime), Some(cli)),
        Err(wrong) => {
            r.problem(ARGUMENTS, wrong.problem);
            (wrong.runtime, None)
        }
    };
    let common = Common::read(&mut r);
    let config = read(&mut r, cli);
    let mode = mode(&mut r, runtime);
    r.finish()?;
    match (mode, common, config) {
        (Some(mode), Some(common), Some(config)) => Ok(Invocation::Run { mode, common, config }),
        _ => Err(ConfigError::single("configuration", "could not be read")),
    }
}

/// Job mode with `--once` or `CLOUD_RUN_JOB`, else service mode with `PORT`. `runtime` is
/// `None` when the command line is too wrong to tell whether it asked for `--once`: only the
/// environment is judged then.
fn mode(r: &mut Reader<'_>, runtime: Option<Args>) -> Option<Mode> {
    let env = r.env();
    if runtime.is_some_and(|a| a.once) || env.get("CLOUD_RUN_JOB").is_some() {
        return Some(Mode::Job);
    }
    match env.get("PORT") {
        Some(port) => match port.parse::<u16>() {
            Ok(p) => Some(Mode::Service(p)),
            Err(_) => {
                r.problem("PORT", format!("{port:?} is not a port number"));
                None
            }
        },
        None if runtime.is_none() => None,
        None => {
            r.problem("mode", "nothing to do: pass --once to run once, or set PORT to serve HTTP");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::vars;

    /// Does nothing, carefully.
    ///
    /// A second paragraph, shown by --help only.
    #[derive(Debug, Clone, Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: Args,
        /// Change nothing.
        #[arg(long)]
        dry_run: bool,
    }

    static SPEC: ProgramSpec = ProgramSpec { name: "demo", vars: &[&[&vars::MAX_AGE]] };

    /// The configuration of the demo: its flag, and one variable of its own.
    fn read(r: &mut Reader<'_>, cli: Option<Cli>) -> Option<(bool, std::time::Duration)> {
        let max_age = r.duration(&vars::MAX_AGE);
        Some((cli?.dry_run, max_age?))
    }

    fn run(args: &[&str], env: &Env) -> Result<Invocation<(bool, std::time::Duration)>, ConfigError> {
        configure(&SPEC, args.iter().copied(), env, read)
    }

    fn print(args: &[&str]) -> String {
        match run(args, &Env::default()) {
            Ok(Invocation::Print(text)) => text,
            other => panic!("{args:?}: expected text to print, got {other:?}"),
        }
    }

    #[test]
    fn help_is_clap_and_lists_every_variable_modes_and_exit_codes() {
        let help = print(&["--help"]);
        assert!(help.starts_with("demo — Does nothing, carefully.\n\nA second paragraph"), "{help}");
        assert!(help.contains("Usage: demo [OPTIONS]"), "{help}");
        for flag in ["--once", "--dry-run", "--help", "--version"] {
            assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
        }
        for v in SPEC.all_vars() {
            assert!(help.contains(&format!("\n  {}", v.name)), "{} missing from --help:\n{help}", v.name);
            assert!(help.contains(v.help), "the meaning of {} missing from --help", v.name);
        }
        assert!(help.contains("BACKUP_MAX_AGE (default: 25h)"), "{help}");
        assert!(help.contains("LIFEBOAT_API_TOKEN (secret)"), "{help}");
        assert!(help.contains("Exit codes: 0 success, 1 failure, 2 bad configuration."), "{help}");
        assert!(help.contains("with --once, or when CLOUD_RUN_JOB is set") && help.contains("with PORT set"));
        assert_eq!(help, SPEC.help::<Cli>());
        // -h prints the same epilogue (the short help leaves out the second paragraph only).
        let short = print(&["-h"]);
        assert!(short.contains("LIFEBOAT_DESTINATION") && !short.contains("A second paragraph"), "{short}");
    }

    #[test]
    fn version_is_the_crate_version() {
        let expected = format!("demo {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(print(&["--version"]), expected);
        assert_eq!(print(&["-V"]), expected);
    }

    #[test]
    fn once_and_program_flags_parse_anywhere() {
        let env = Env::from_pairs([("HOME", "/tmp")]);
        for args in [&["--once", "--dry-run"][..], &["--dry-run", "--once"][..]] {
            let Ok(Invocation::Run { mode, config, .. }) = run(args, &env) else { panic!("{args:?}") };
            assert_eq!((mode, config.0), (Mode::Job, true), "{args:?}");
        }
        let Ok(Invocation::Run { mode, config, .. }) = run(&["--once"], &env) else { panic!("once") };
        assert_eq!((mode, config.0), (Mode::Job, false));
    }

    #[test]
    fn modes() {
        let env = Env::from_pairs([("HOME", "/tmp")]);
        let Ok(Invocation::Run { mode, .. }) = run(&[], &env.clone().with("CLOUD_RUN_JOB", "j")) else { panic!("job") };
        assert_eq!(mode, Mode::Job);
        let Ok(Invocation::Run { mode, .. }) = run(&[], &env.clone().with("PORT", "8080")) else { panic!("svc") };
        assert_eq!(mode, Mode::Service(8080));
        let Ok(Invocation::Run { mode, .. }) = run(&["--once"], &env.clone().with("PORT", "8080")) else {
            panic!("once wins")
        };
        assert_eq!(mode, Mode::Job);
        let err = run(&[], &env).expect_err("no mode");
        assert_eq!(err.problems[0].name, "mode");
        assert!(err.problems[0].message.contains("pass --once"), "{err}");
    }

    #[test]
    fn config_problems_include_mode_and_variables() {
        let env = Env::from_pairs([("PORT", "eighty"), ("BACKUP_RETENTION_DAYS", "0")]);
        let err = run(&[], &env).expect_err("bad");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["BACKUP_RETENTION_DAYS", "PORT"]);
    }

    #[test]
    fn argument_errors_are_reported_with_every_environment_problem() {
        let env = Env::from_pairs([("BACKUP_TIMEZONE", "Nowhere/Special"), ("BACKUP_MAX_AGE", "soon")]);
        let err = run(&["--once", "--dry-rn"], &env).expect_err("bad");
        let names: Vec<_> = err.problems.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, [ARGUMENTS, "BACKUP_TIMEZONE", "BACKUP_MAX_AGE"], "{err}");
        let message = &err.problems[0].message;
        assert!(message.contains("unexpected argument '--dry-rn'"), "{message}");
        assert!(message.contains("'--dry-run'"), "clap's suggestion is kept: {message}");
        assert!(!message.contains("Usage:") && !message.contains('\n'), "one line: {message}");
        let text = err.to_string();
        assert!(text.starts_with("invalid configuration (3 problems):"), "{text}");
        assert!(text.ends_with("Run with --help to see every variable, its default and its meaning."), "{text}");
    }

    #[test]
    fn a_wrong_command_line_still_tells_whether_once_was_given() {
        let names = |args: &[&str]| -> Vec<String> {
            let err = run(args, &Env::default()).expect_err("bad");
            err.problems.into_iter().map(|p| p.name).collect()
        };
        assert_eq!(names(&["--once", "stray"]), [ARGUMENTS]);
        assert_eq!(names(&["--dry-run", "stray"]), [ARGUMENTS, "mode"]);
    }
}
