//! berth's domain types, parsed once at the edge and passed everywhere else.
//!
//! Nothing in this crate does I/O: like go-containerregistry's `pkg/name`, it only
//! turns strings into values that are known to be well formed.

mod digest;
mod kind;
mod names;
mod reference;
mod registry_url;

pub use digest::{Digest, DigestError};
pub use kind::{CredentialKind, KindError};
pub use names::{mask_username, NameError, Slug};
pub use reference::{
    ImageRef, Reference, ReferenceError, DOCKER_HUB, DOCKER_HUB_CONFIG_KEY, DOCKER_HUB_HOST,
    DOCKER_HUB_NAMES,
};
pub use registry_url::{RegistryUrl, RegistryUrlError, Scheme};
