//! `restore`: Restores a database backup (streaming into pg_restore) or a bucket snapshot (server-side copies), verifying checksums.

use async_trait::async_trait;

use crate::config::{Reader, vars};
use crate::events::RunResult;
use crate::runtime::{Program, ProgramSpec, RunContext, Services, StartError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec {
    name: "restore",
    about: "Restores a database backup (streaming into pg_restore) or a bucket snapshot (server-side copies), verifying checksums.",
    usage: "",
    vars: &[vars::POSTGRES],
};

/// Settings of `restore`.
#[derive(Debug, Clone)]
pub struct Config;

/// Reads the settings.
pub fn read(_r: &mut Reader<'_>, _args: &[String]) -> Option<Config> {
    Some(Config)
}

/// The program.
#[derive(Debug)]
pub struct App {
    services: Services,
}

/// Builds the program.
pub async fn start(services: Services, _config: Config) -> Result<App, StartError> {
    Ok(App { services })
}

#[async_trait]
impl Program for App {
    async fn run(&self, ctx: RunContext) -> RunResult {
        super::not_yet(&self.services, SPEC.name, ctx.started)
    }
}
