//! The registry's own error bodies: `{"errors":[{"code","message","detail"}]}`
//! (distribution spec, "Error Codes").

use std::fmt;

use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct RegistryErrorBody {
    #[serde(default)]
    pub errors: Vec<RegistryErrorEntry>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RegistryErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl RegistryErrorBody {
    /// Parses an error body; `None` when it is not the registry error shape.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let body: RegistryErrorBody = serde_json::from_slice(bytes).ok()?;
        (!body.errors.is_empty()).then_some(body)
    }

    pub fn has_code(&self, codes: &[&str]) -> bool {
        self.errors
            .iter()
            .any(|e| codes.iter().any(|c| e.code.eq_ignore_ascii_case(c)))
    }
}

impl fmt::Display for RegistryErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            // Registry messages are bounded: a hostile server must not flood our logs.
            let msg: String = e.message.chars().take(200).collect();
            write!(f, "{} {}", e.code, msg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_errors() {
        let b = RegistryErrorBody::parse(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#).unwrap();
        assert!(b.has_code(&["MANIFEST_UNKNOWN"]));
        assert_eq!(b.to_string(), "MANIFEST_UNKNOWN manifest unknown");
        assert_eq!(RegistryErrorBody::parse(b"<html>"), None);
        assert_eq!(RegistryErrorBody::parse(br#"{"errors":[]}"#), None);
    }
}
