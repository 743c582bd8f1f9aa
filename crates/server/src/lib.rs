//! berth's control plane: `berth server`.
//!
//! The HTTP API (axum) over three parts it owns: the [`Store`](berth_store::Store),
//! the vault (`secrets.rs`: master keys and where passwords are kept) and the guarded
//! [`Registry`](berth_registry::Registry) client. Routes live in `routes/`, one file
//! per resource; the web dashboard (`dashboard.rs`, assets in `dashboard/`) is
//! served at `/` and uses the same routes.

mod api;
mod checks;
mod config;
pub mod dashboard;
mod deploy;
mod kinds;
mod logging;
mod metrics;
mod openapi;
mod routes;
mod setup;
mod state;
mod tokens;
mod vault;
mod views;

pub use config::{
    Config, ConfigError, CredentialChecks, DeployLimits, FileConfig, Overrides as ConfigOverrides,
    RuntimeChoice, SecretStoreKind, TrafficConfig, VaultConfig,
};
pub use logging::log_filter;
pub use setup::{rotate_master_key, serve, start, Running, SetupError};
