//! The log filter every berth process uses: the operator's (`BERTH_LOG`,
//! `RUST_LOG`), with the targets that would write a secret capped whatever it says.

use tracing_subscriber::filter::{Directive, EnvFilter};

/// Targets capped at DEBUG: at TRACE, the AWS SDK's orchestrator writes whole HTTP
/// response bodies, and ECR's `GetAuthorizationToken` answer (not marked
/// sensitive in its model, unlike STS's keys or Secrets Manager's values) is a
/// registry token in base64.
const CAPPED: &[&str] = &[
    "aws_smithy_runtime::client::orchestrator=debug",
    "aws_smithy_runtime_api=debug",
    "aws_smithy_http_client=debug",
];

/// `spec` (an `EnvFilter` string such as `info` or `berth=trace`) with the caps
/// added last: a directive for the same target replaces the operator's.
pub fn log_filter(spec: &str) -> EnvFilter {
    let mut filter = EnvFilter::new(spec);
    for cap in CAPPED {
        if let Ok(d) = cap.parse::<Directive>() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_caps_hold_whatever_the_operator_asks() {
        for spec in [
            "trace",
            "aws_smithy_runtime=trace",
            "aws_smithy_runtime::client::orchestrator=trace,info",
        ] {
            let text = super::log_filter(spec).to_string();
            assert!(
                text.contains("aws_smithy_runtime::client::orchestrator=debug"),
                "{spec}: {text}"
            );
            assert!(
                !text.contains("aws_smithy_runtime::client::orchestrator=trace"),
                "{spec}: {text}"
            );
        }
    }
}
