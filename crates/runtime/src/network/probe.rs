//! Is the app answering? A TCP connection to its port on the namespace's loopback,
//! or, with a health path, an HTTP/1.1 GET there that answers 2xx or 3xx.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;

use super::Netns;

/// What ready means for one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub port: u16,
    /// `None`: the port accepting a connection is enough.
    pub health_path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("port {port} does not accept connections yet ({error})")]
    Connect { port: u16, error: std::io::Error },
    #[error("GET {path} answered HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("GET {path} failed: {error}")]
    Http { path: String, error: String },
    #[error("GET {path} did not answer within {secs} s")]
    Timeout { path: String, secs: u64 },
}

/// One attempt, within `timeout`.
pub async fn probe(ns: &Netns, p: &Probe, timeout: Duration) -> Result<(), ProbeError> {
    let connect = |error| ProbeError::Connect {
        port: p.port,
        error,
    };
    let stream = tokio::time::timeout(timeout, ns.dial(p.port))
        .await
        .map_err(|_| connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect)?;
    let Some(path) = &p.health_path else {
        return Ok(());
    };
    let http = |error: String| ProbeError::Http {
        path: path.clone(),
        error,
    };
    let get = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| http(e.to_string()))?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::USER_AGENT, "berth-probe")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = answer.status();
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(ProbeError::Status {
                path: path.clone(),
                status: status.as_u16(),
            })
        }
    };
    tokio::time::timeout(timeout, get)
        .await
        .map_err(|_| ProbeError::Timeout {
            path: path.clone(),
            secs: timeout.as_secs().max(1),
        })?
}
