//! Other AWS accounts: the roles given with `--role-arn`, each assumed through
//! aws-config's own STS assume-role provider (the SDK caches its credentials and
//! refreshes them before they expire), and the account of the sidecar's own
//! credentials (sts:GetCallerIdentity), which targets then carry too.
//!
//! A role that cannot be assumed fails only the calls of its own account. So that
//! a failing role costs one AssumeRole attempt per cycle rather than one per API
//! call, [`RoleSession`] remembers a failure until the next cycle starts
//! ([`RoleSession::begin_cycle`]) and answers the calls of that cycle with it. The
//! failure is an [`AwsError`] the account's calls carry on (see
//! `AwsError::from_sdk`): when the sidecar's own credentials are at fault (none,
//! refused, expired) or STS is out of reach, it has the [`Cause`](super::error::Cause) whose one line
//! says what to set; otherwise [`RoleSession::failure_line`] says which policies
//! to fix.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_sts::operation::assume_role::AssumeRoleError;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;

use super::calls::{InFlight, counted};
use super::{AwsError, AwsMetrics, ErrorKind};

/// The role session name the sidecar gives STS (it shows in the other account's
/// CloudTrail).
pub const SESSION_NAME: &str = "cloudmap-sd";

/// An IAM role ARN, `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, and its account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoleArn {
    arn: String,
    account: String,
}

impl RoleArn {
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The 12-digit id of the account the role lives in.
    pub fn account(&self) -> &str {
        &self.account
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

impl FromStr for RoleArn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "{s:?} is not an IAM role ARN ({why}; expected arn:aws:iam::123456789012:role/NAME)"
            )
        };
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        let [arn, partition, service, region, account, resource] = parts[..] else {
            return Err(bad("too few `:`-separated parts"));
        };
        if arn != "arn" || !partition.starts_with("aws") || service != "iam" {
            return Err(bad("it must start with arn:aws:iam:"));
        }
        if !region.is_empty() {
            return Err(bad("IAM ARNs have no Region"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("the account id must be 12 digits"));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(bad("the resource must be role/NAME"));
        };
        let name = path_and_name.rsplit('/').next().unwrap_or("");
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c);
        if name.is_empty() || name.len() > 64 || !path_and_name.chars().all(allowed) {
            return Err(bad(
                "the role name must be 1-64 of A-Z a-z 0-9 + = , . @ _ -",
            ));
        }
        Ok(RoleArn {
            arn: s.to_string(),
            account: account.to_string(),
        })
    }
}

/// Checks an STS external id: 2 to 1224 of `A-Z a-z 0-9 + = , . @ : / _ -`.
pub fn check_external_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c);
    if (2..=1224).contains(&id.len()) && id.chars().all(allowed) {
        Ok(())
    } else {
        Err("must be 2 to 1224 of A-Z a-z 0-9 + = , . @ : / _ -".into())
    }
}

/// Which accounts the sidecar discovers in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountsOptions {
    /// Roles to assume, one per other account (`--role-arn`).
    pub roles: Vec<RoleArn>,
    /// The external id every role's trust policy asks for (`--role-external-id`).
    pub external_id: Option<String>,
    /// Whether the account of the sidecar's own credentials is discovered too
    /// (`--own-account`).
    pub own: bool,
}

impl Default for AccountsOptions {
    fn default() -> Self {
        AccountsOptions {
            roles: Vec::new(),
            external_id: None,
            own: true,
        }
    }
}

impl AccountsOptions {
    /// Whether targets, metrics and logs name their account: only when a role is
    /// given; without one everything stays as for a single account.
    pub fn labelled(&self) -> bool {
        !self.roles.is_empty()
    }
}

/// aws-config's assume-role provider for one role, each AssumeRole counted in the
/// account's metrics, and a failure remembered until the next cycle.
#[derive(Debug)]
pub struct RoleSession {
    role: RoleArn,
    external_id: bool,
    inner: AssumeRoleProvider,
    metrics: Arc<AwsMetrics>,
    state: Mutex<SessionState>,
}

#[derive(Debug, Default)]
struct SessionState {
    /// Cycles begun so far.
    cycle: u64,
    /// The last failure and its cycle.
    failed: Option<(u64, AwsError)>,
}

impl RoleSession {
    pub fn role(&self) -> &RoleArn {
        &self.role
    }

    /// A new cycle: the next call that needs credentials may ask STS again.
    pub fn begin_cycle(&self) {
        self.state.lock().expect("not poisoned").cycle += 1;
    }

    /// The AssumeRole failure of the current cycle, if there was one.
    pub fn failure(&self) -> Option<AwsError> {
        let s = self.state.lock().expect("not poisoned");
        match &s.failed {
            Some((cycle, e)) if *cycle == s.cycle => Some(e.clone()),
            _ => None,
        }
    }

    /// The one line about `e`, a failure to assume this role: with a cause (the
    /// sidecar's own credentials, the endpoint) its line, which says what to set;
    /// otherwise the error and which policies must allow what.
    pub fn failure_line(&self, e: &AwsError) -> String {
        match e.cause {
            Some(_) => e.to_string(),
            None => format!("{e}. To fix: {}", self.remedy()),
        }
    }

    /// What to do about a refused AssumeRole, in one sentence.
    fn remedy(&self) -> String {
        let external = if self.external_id {
            " with the same external id as --role-external-id"
        } else {
            ""
        };
        format!(
            "the trust policy of {} must allow the sidecar's task role{external}, and the \
             task role's policy must allow sts:AssumeRole on it",
            self.role
        )
    }

    async fn assume(&self) -> provider::Result {
        let cycle = {
            let s = self.state.lock().expect("not poisoned");
            if let Some((at, e)) = &s.failed
                && *at == s.cycle
            {
                let mut again = e.clone();
                again.message.push_str(" (tried earlier this cycle)");
                return Err(CredentialsError::provider_error(again));
            }
            s.cycle
        };
        let call = InFlight::start(&self.metrics, "AssumeRole");
        let r = self.inner.provide_credentials().await;
        let e = match r {
            Ok(c) => {
                let _ = call.end(Ok(()));
                return Ok(c);
            }
            Err(e) => e,
        };
        tracing::debug!(role = %self.role, error = ?e, "AssumeRole failed");
        let error = role_failure(&e, &self.role);
        self.state.lock().expect("not poisoned").failed = Some((cycle, error.clone()));
        let _ = call.end(Err::<(), _>(error.clone()));
        // The account's calls carry the classified failure on, cause and all.
        Err(CredentialsError::provider_error(error))
    }
}

impl ProvideCredentials for RoleSession {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(self.assume())
    }
}

/// A failed AssumeRole of `role`, classified: STS's own error when the provider
/// passes it on (with its cause when the sidecar's own credentials or the
/// endpoint are at fault), else the provider's message.
fn role_failure(e: &CredentialsError, role: &RoleArn) -> AwsError {
    let sts = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>());
    let mut error = match sts {
        Some(sdk) => AwsError::from_sdk_ref("AssumeRole", sdk),
        None => AwsError::new("AssumeRole", ErrorKind::Other, with_causes(e)),
    };
    let message = match (error.cause, error.message.as_str()) {
        // The cause's line says what is wrong; the role says where.
        (Some(_), "") => format!("role {role}"),
        (Some(_), m) => format!("role {role}: {m}"),
        (None, m) => format!("cannot assume role {role}: {m}"),
    };
    error.message = message;
    error
}

/// A credentials error with its causes, in one line.
fn with_causes(e: &CredentialsError) -> String {
    let mut out = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The SDK configuration for `role`: the same Region, endpoint, timeouts and
/// retries as `sdk`, credentials from assuming the role with `sdk`'s own.
pub async fn role_config(
    sdk: &SdkConfig,
    role: &RoleArn,
    external_id: Option<&str>,
    metrics: Arc<AwsMetrics>,
) -> (SdkConfig, Arc<RoleSession>) {
    let mut builder = AssumeRoleProvider::builder(role.as_str())
        .session_name(SESSION_NAME)
        .configure(sdk);
    if let Some(id) = external_id {
        builder = builder.external_id(id);
    }
    let session = Arc::new(RoleSession {
        role: role.clone(),
        external_id: external_id.is_some(),
        inner: builder.build().await,
        metrics,
        state: Mutex::new(SessionState::default()),
    });
    // One provider (one cache partition) for the account's three clients: one
    // AssumeRole serves them all until the credentials near their expiry.
    let provider: Arc<dyn ProvideCredentials> = session.clone();
    let conf = sdk
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::from(provider))
        .build();
    (conf, session)
}

/// The account of the sidecar's own credentials (sts:GetCallerIdentity, which no
/// IAM policy can deny).
pub async fn own_account(sdk: &SdkConfig, metrics: &AwsMetrics) -> Result<String, AwsError> {
    const OP: &str = "GetCallerIdentity";
    let sts = aws_sdk_sts::Client::new(sdk);
    let out = counted(metrics, OP, sts.get_caller_identity().send()).await?;
    out.account()
        .map(str::to_string)
        .ok_or_else(|| AwsError::new(OP, ErrorKind::Server, "response without Account"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_checked_and_name_their_account() {
        let r: RoleArn = "arn:aws:iam::111111111111:role/cloudmap-sd-discovery"
            .parse()
            .unwrap();
        assert_eq!(r.account(), "111111111111");
        assert_eq!(
            r.as_str(),
            "arn:aws:iam::111111111111:role/cloudmap-sd-discovery"
        );
        let with_path: RoleArn = "arn:aws-cn:iam::222222222222:role/ops/sd".parse().unwrap();
        assert_eq!(with_path.account(), "222222222222");
        for (bad, why) in [
            ("cloudmap-sd-discovery", "too few"),
            ("arn:aws:iam::1111:role/x", "12 digits"),
            ("arn:aws:iam::111111111111:user/x", "role/NAME"),
            ("arn:aws:sts::111111111111:role/x", "arn:aws:iam:"),
            ("arn:aws:iam:us-east-1:111111111111:role/x", "no Region"),
            ("arn:aws:iam::111111111111:role/", "1-64"),
            ("arn:aws:iam::111111111111:role/a b", "1-64"),
        ] {
            let e = bad.parse::<RoleArn>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn external_ids() {
        assert!(check_external_id("prometheus-central").is_ok());
        assert!(check_external_id("x").is_err());
        assert!(check_external_id("no spaces").is_err());
    }
}
