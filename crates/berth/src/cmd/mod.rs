//! One file per verb.

pub mod api;
pub mod audit;
pub mod credentials;
pub mod deploy;
mod docker_config;
pub mod login;
pub mod preflight;
pub mod project;
pub mod server;
pub mod service;
mod service_save;
mod service_wizard;
pub mod user;

/// How a command ended: the exit code is 0 for `Ok`, 1 for `Failed`.
pub enum Outcome {
    Ok,
    Failed,
}

/// Errors that end a command: usage errors exit 2, the rest 1.
#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::Other(e.into())
    }
}
