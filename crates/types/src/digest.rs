use std::fmt;
use std::str::FromStr;

/// A content digest `algorithm:hex`, e.g. `sha256:e3b0...`.
///
/// Known algorithms (`sha256`, `sha512`) are checked for their exact hex length;
/// others follow the OCI grammar so that a registry's answer can still be reported.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("a digest is written algorithm:hex, e.g. sha256:<64 hex digits>")]
    Shape,
    #[error("digest algorithm {0:?} is not valid")]
    Algorithm(String),
    #[error("digest hex has the wrong length or characters for {0}")]
    Hex(String),
}

impl Digest {
    /// The digest of `bytes` under SHA-256 given as a 32-byte hash.
    pub fn sha256_from_bytes(hash: &[u8; 32]) -> Self {
        let mut hex = String::with_capacity(64);
        for b in hash {
            hex.push_str(&format!("{b:02x}"));
        }
        Digest {
            algorithm: "sha256".into(),
            hex,
        }
    }

    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (algorithm, hex) = s.split_once(':').ok_or(DigestError::Shape)?;
        // digest-algorithm := component [separator component]*; component := [a-z0-9]+
        let valid_algo = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
        if !valid_algo {
            return Err(DigestError::Algorithm(algorithm.into()));
        }
        let hex_ok = match algorithm {
            "sha256" => {
                hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            }
            "sha512" => {
                hex.len() == 128 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            }
            _ => {
                hex.len() >= 32
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
            }
        };
        if !hex_ok {
            return Err(DigestError::Hex(algorithm.into()));
        }
        Ok(Digest {
            algorithm: algorithm.into(),
            hex: hex.into(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&str, DigestError>) {
        assert_eq!(
            input.parse::<Digest>().map(|d| d.to_string()),
            expect.map(str::to_owned),
            "{input}"
        );
    }

    #[test]
    fn parses() {
        let e3 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        check(e3, Ok(e3));
        check("sha256:abc", Err(DigestError::Hex("sha256".into())));
        check(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            Err(DigestError::Hex("sha256".into())),
        );
        check("nocolon", Err(DigestError::Shape));
        check("SHA256:abcd", Err(DigestError::Algorithm("SHA256".into())));
        check(
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
            Ok("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"),
        );
    }

    #[test]
    fn from_bytes() {
        let d = Digest::sha256_from_bytes(&[0xab; 32]);
        assert_eq!(d.to_string(), format!("sha256:{}", "ab".repeat(32)));
    }
}
