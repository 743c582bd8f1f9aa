//! The registry protocol, one file per step, each knowing only the one below:
//! `guard` (the network door), `ping` (`GET /v2/`), `challenge` (`WWW-Authenticate`),
//! `bearer` (the token exchange), `auth` (what a session holds, and how a 401 is
//! answered), `error` (the registry's error bodies).

pub mod auth;
pub mod bearer;
pub mod challenge;
pub mod error;
pub mod guard;
pub mod ping;
