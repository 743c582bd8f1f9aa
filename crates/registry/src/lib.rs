//! berth's registry client: OCI Distribution v2 over an SSRF-guarded transport.
//!
//! Layers, each knowing only the one below (as in go-containerregistry):
//! - [`policy`]: which addresses and schemes are allowed;
//! - [`transport`]: the guarded client, `GET /v2/`, challenges, tokens, error bodies;
//! - [`client`]: a [`Registry`] per process and a [`Session`] per repository;
//! - [`manifest`]: resolving a reference to a digest, choosing the platform;
//! - [`open`]: the one walk through ping, authenticate and resolve, observed;
//! - [`preflight`]: the Test Connection steps and their report.
//!
//! Nothing here knows about HTTP servers, databases or runtimes.

pub mod blob;
pub mod client;
mod content;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod open;
pub mod policy;
pub mod preflight;
pub mod transport;

pub use client::{Registry, Session, Target, TokenReuse};
pub use credentials::Credentials;
pub use error::{Code, RegistryError};
pub use open::{open, Observer, Opened, StepName};
pub use policy::NetworkPolicy;
pub use preflight::PreflightReport;
