//! API tokens: 256 random bits, shown once, stored only as a SHA-256 hash.
//! (A fast hash is right here: the token has full entropy, nothing to brute-force.)
//! A presented token is hashed and looked up by its hash: the comparison the
//! database makes is on a digest the caller cannot steer byte by byte, so its timing
//! says nothing about any stored token; no plaintext comparison happens anywhere.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "berth_";
/// A project token's prefix: what it is can be told at a glance (and by secret
/// scanners), and it is never a user's.
pub const PROJECT_PREFIX: &str = "berth_pt_";

pub fn generate() -> SecretString {
    generate_with(PREFIX)
}

pub fn generate_with(prefix: &str) -> SecretString {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    SecretString::from(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw.as_ref())))
}

pub fn hash(token: &SecretString) -> String {
    hex::encode(Sha256::digest(token.expose_secret().as_bytes()))
}
