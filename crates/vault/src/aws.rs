//! The AWS configuration shared by the KMS key source and the Secrets Manager store.

/// Loaded once per client from the standard chain: `AWS_*` environment, the shared
/// config files, web identity, ECS and instance roles. `AWS_ENDPOINT_URL` (or the
/// per-service `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL_SECRETS_MANAGER`) points
/// it at a VPC endpoint or, in the tests, a local moto server.
pub(crate) async fn config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
