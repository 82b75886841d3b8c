//! `monitor`: Receives result events (Pub/Sub push) and periodic checks; alerts Slack once per incident and on recovery.

use async_trait::async_trait;

use crate::config::{Reader, vars};
use crate::events::RunResult;
use crate::runtime::{Program, ProgramSpec, RunContext, Services, StartError};

/// The program's specification.
pub static SPEC: ProgramSpec = ProgramSpec {
    name: "monitor",
    about: "Receives result events (Pub/Sub push) and periodic checks; alerts Slack once per incident and on recovery.",
    usage: "",
    vars: &[vars::MONITOR],
};

/// Settings of `monitor`.
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
