//! berth's control plane: `berth server`.
//!
//! The HTTP API (axum) over three parts it owns: the [`Store`](berth_store::Store),
//! the vault's [`Keyring`](berth_vault::Keyring) and the guarded
//! [`Registry`](berth_registry::Registry) client. Routes live in `routes/`, one file
//! per resource.

mod api;
mod config;
mod deploy;
mod openapi;
mod routes;
mod setup;
mod state;
mod tokens;

pub use config::{Config, ConfigError, FileConfig, Overrides as ConfigOverrides};
pub use setup::{rotate_master_key, serve, start, Running, SetupError};
