//! Step 1: `GET /v2/`. 200 means anonymous access works; 401 carries the challenges.

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::Method;
use url::Url;

use super::challenge::{self, Challenge};
use super::guard::{read_limited, Request, Transport};
use crate::error::RegistryError;

#[derive(Debug)]
pub struct Pinged {
    pub status: u16,
    /// Empty when the registry answered 200.
    pub challenges: Vec<Challenge>,
}

pub async fn ping(
    t: &Transport,
    base: &Url,
    plain_http_host: Option<&str>,
) -> Result<Pinged, RegistryError> {
    let url = base
        .join("/v2/")
        .map_err(|e| RegistryError::InvalidUrl(e.to_string()))?;
    let (resp, answered_by) = t
        .send(Request {
            method: Method::GET,
            url: url.clone(),
            headers: HeaderMap::new(),
            body: None,
            plain_http_host: plain_http_host.map(str::to_owned),
        })
        .await?;
    let status = resp.status().as_u16();
    match status {
        200..=299 => Ok(Pinged {
            status,
            challenges: Vec::new(),
        }),
        // Only the registry's own challenge is answered: one from the host a
        // redirect led to would get the user's credentials.
        401 if answered_by.host() != url.host()
            || answered_by.port_or_known_default() != url.port_or_known_default() =>
        {
            Err(RegistryError::ForeignChallenge {
                host: super::guard::authority(&answered_by),
            })
        }
        401 => {
            let challenges = challenge::parse_all(
                resp.headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            if challenges.is_empty() {
                return Err(RegistryError::Challenge(
                    "GET /v2/ answered 401 without a WWW-Authenticate challenge".into(),
                ));
            }
            Ok(Pinged { status, challenges })
        }
        _ => {
            let body = read_limited(resp, 64 * 1024).await.unwrap_or_default();
            let detail = match super::error::RegistryErrorBody::parse(&body) {
                Some(b) => b.to_string(),
                None if status == 404 => "this host does not serve the registry API at /v2/".into(),
                None => "unexpected answer".into(),
            };
            Err(RegistryError::Ping { status, detail })
        }
    }
}
