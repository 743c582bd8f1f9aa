//! How a deployment fails: one stable public code and a message for the user.

use berth_registry::{Code, RegistryError};
use berth_types::Digest;

/// The stable codes a failed deployment carries (CONTRACT.md): the preflight's,
/// plus `runtime_error` for what happens after the pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureCode {
    Registry(Code),
    Runtime,
    /// The image is over a cap (config size, uncompressed bytes, entries).
    ImageRejected,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCode::Registry(c) => c.as_str(),
            FailureCode::Runtime => "runtime_error",
            FailureCode::ImageRejected => "image_rejected",
        }
    }
}

#[derive(Debug)]
pub struct Failure {
    pub code: FailureCode,
    pub message: String,
    /// The digest it had resolved to, when it got that far.
    pub digest: Option<Digest>,
}

impl Failure {
    pub fn registry(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code: FailureCode::Registry(code),
            message: message.into(),
            digest: None,
        }
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: FailureCode::Runtime,
            message: message.into(),
            digest: None,
        }
    }

    pub fn image_rejected(message: impl Into<String>) -> Self {
        Failure {
            code: FailureCode::ImageRejected,
            message: message.into(),
            digest: None,
        }
    }

    /// A registry error, in the words of the preflight's explanation.
    pub fn from_registry(e: &RegistryError, explained: String) -> Self {
        Failure::registry(e.code(), explained)
    }

    pub fn at(mut self, digest: &Digest) -> Self {
        self.digest = Some(digest.clone());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        for (f, code) in [
            (Failure::runtime("x"), "runtime_error"),
            (Failure::registry(Code::AuthFailed, "x"), "auth_failed"),
            (
                Failure::registry(Code::ManifestNotFound, "x"),
                "manifest_not_found",
            ),
            (Failure::registry(Code::NetworkError, "x"), "network_error"),
            (Failure::image_rejected("x"), "image_rejected"),
        ] {
            assert_eq!(f.code.as_str(), code);
        }
    }
}
