//! The AWS SDK configuration, loaded once by `main`; the three adapters built from
//! it, for the own account and for each role's; and the custom-endpoint fix for
//! Cloud Map's `data-` host prefix.
//!
//! DiscoverInstances and DiscoverInstancesRevision are modelled with the host prefix
//! `data-`: against AWS they go to `data-servicediscovery.<region>.amazonaws.com`.
//! Against a custom endpoint (`AWS_ENDPOINT_URL=http://127.0.0.1:5000`, moto server,
//! LocalStack) the SDK would call `http://data-127.0.0.1:5000`, which does not
//! resolve. [`NoHostPrefixOnCustomEndpoint`] drops the prefix, and only when an
//! endpoint URL was configured, before the request is signed.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_servicediscovery::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_servicediscovery::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use aws_types::endpoint_config::EndpointUrl;

use super::accounts::{AccountsOptions, own_account, role_config};
use super::cloudmap::SdkCloudMap;
use super::ec2::SdkEc2;
use super::ecs::SdkEcs;
use super::{AccountClients, Accounts, AwsError, AwsMetrics, Clients};

/// Loads the standard AWS configuration chain with the sidecar's timeouts and
/// retries (standard mode: exponential backoff with jitter, throttling retried).
pub async fn load_sdk_config(api_timeout: Duration) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3).min(api_timeout))
                .operation_attempt_timeout(api_timeout)
                .operation_timeout(api_timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// Removes the modelled host prefix when the client talks to a custom endpoint.
#[derive(Debug, Default)]
pub struct NoHostPrefixOnCustomEndpoint;

impl Intercept for NoHostPrefixOnCustomEndpoint {
    fn name(&self) -> &'static str {
        "NoHostPrefixOnCustomEndpoint"
    }

    fn modify_before_retry_loop(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<EndpointUrl>().is_some() && cfg.load::<EndpointPrefix>().is_some() {
            cfg.interceptor_state().unset::<EndpointPrefix>();
        }
        Ok(())
    }
}

/// The Cloud Map client, with the host-prefix fix installed.
pub fn servicediscovery_client(sdk: &SdkConfig) -> aws_sdk_servicediscovery::Client {
    let conf = aws_sdk_servicediscovery::config::Builder::from(sdk)
        .interceptor(NoHostPrefixOnCustomEndpoint)
        .build();
    aws_sdk_servicediscovery::Client::from_conf(conf)
}

/// Every account's SDK adapters.
pub type SidecarAccounts = Accounts<SdkCloudMap, SdkEcs, SdkEc2>;

/// The three adapters over one SDK configuration, counting their calls in `metrics`.
pub fn clients(sdk: &SdkConfig, metrics: Arc<AwsMetrics>) -> Clients<SdkCloudMap, SdkEcs, SdkEc2> {
    Clients {
        cloudmap: SdkCloudMap::new(servicediscovery_client(sdk), metrics.clone()),
        ecs: SdkEcs::new(aws_sdk_ecs::Client::new(sdk), metrics.clone()),
        ec2: SdkEc2::new(aws_sdk_ec2::Client::new(sdk), metrics),
    }
}

/// The SDK adapters of every account to discover in: without a role, the own
/// account's alone, unlabelled and counted as before. With roles, each account's
/// calls count under its id; the own account's id comes from
/// sts:GetCallerIdentity (the only call made here; the roles are assumed on first
/// use), which is the one way this fails.
pub async fn accounts(
    sdk: &SdkConfig,
    opts: &AccountsOptions,
    metrics: &Arc<AwsMetrics>,
) -> Result<SidecarAccounts, AwsError> {
    if !opts.labelled() {
        return Ok(clients(sdk, metrics.clone()).into());
    }
    let mut out = Vec::new();
    if opts.own {
        let id = own_account(sdk, metrics).await?;
        if opts.roles.iter().any(|r| r.account() == id) {
            tracing::warn!(account = %id, "a --role-arn is in the account of the sidecar's own credentials; that account is discovered once, through the role");
        } else {
            let id: Arc<str> = id.into();
            let m = Arc::new(metrics.for_account(id.clone()));
            out.push(AccountClients {
                id: Some(id),
                role: None,
                clients: clients(sdk, m),
            });
        }
    }
    for role in &opts.roles {
        let id: Arc<str> = role.account().into();
        let m = Arc::new(metrics.for_account(id.clone()));
        let (conf, session) = role_config(sdk, role, opts.external_id.as_deref(), m.clone()).await;
        out.push(AccountClients {
            id: Some(id),
            role: Some(session),
            clients: clients(&conf, m),
        });
    }
    Ok(Accounts(out))
}
