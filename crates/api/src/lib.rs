//! berth's HTTP API as types, shared by the server (which answers them) and the
//! CLI (which reads them): the request bodies the routes take, the views they
//! answer, and the error body with its codes. No HTTP framework, store or server
//! here: the server builds these views from its store rows, the CLI deserializes
//! them. The OpenAPI schemas derive from the same types (`ToSchema`).
//!
//! Times cross the wire as the store writes them, RFC 3339 UTC with milliseconds
//! ([`time`]).

mod error;
mod requests;
pub mod time;
mod views;

pub use error::{ErrorBody, ErrorCode, UnknownCode};
pub use requests::{
    AddMember, CreateProject, CreateService, CreateToken, CreateUser, CredentialsRequest,
    NetworkName, PreflightRequest, PutRegistry, RegistryInput, ResourcesInput, UpdateService,
    VolumeInput,
};
pub use views::{
    AuditEventView, BlobState, BlobView, CreatedUser, CredentialsAnswer, DeploymentView, ExitView,
    HealthView, KindName, LazyView, MemberView, ProjectView, PullView, RegistrySaved, RegistryView,
    ResourcesView, RestartPolicyName, Revoked, SecretView, ServiceView, TokenView,
};
