//! A typed reading of `prometheus.yml`, as far as the sidecar cares: the
//! remote_write URLs (and their sigv4 Region), the external labels, every file_sd
//! pattern and http_sd URL, and the sections agent mode refuses. Used by the AMP
//! probe and by `check`'s lint.
//!
//! Only these fields are declared; serde ignores everything else in the file, so a
//! configuration of any Prometheus version reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IgnoredAny;

/// How Prometheus runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PrometheusMode {
    /// A local TSDB, rules and alerting (the default).
    #[default]
    Server,
    /// Agent mode (`--enable-feature=agent` in 2.x, `--agent` in 3.x): scrapes and
    /// remote-writes, keeps no TSDB, refuses rule_files, alerting and remote_read.
    Agent,
}

impl PrometheusMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PrometheusMode::Server => "server",
            PrometheusMode::Agent => "agent",
        }
    }
}

/// The parts of a Prometheus configuration file that are declared here.
#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    global: Global,
    #[serde(default)]
    remote_write: Vec<RemoteWrite>,
    #[serde(default)]
    scrape_configs: Vec<ScrapeConfig>,
    #[serde(default)]
    rule_files: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    alerting: Option<Alerting>,
    #[serde(default)]
    remote_read: Option<Vec<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
struct Alerting {
    #[serde(default)]
    alertmanagers: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    alert_relabel_configs: Option<Vec<IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
struct Global {
    #[serde(default)]
    external_labels: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
struct RemoteWrite {
    url: Option<String>,
    sigv4: Option<Sigv4>,
}

#[derive(Debug, Default, Deserialize)]
struct Sigv4 {
    region: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ScrapeConfig {
    #[serde(default)]
    job_name: String,
    #[serde(default)]
    file_sd_configs: Vec<FileSdConfig>,
    #[serde(default)]
    http_sd_configs: Vec<HttpSdConfig>,
}

#[derive(Debug, Deserialize)]
struct HttpSdConfig {
    url: Option<String>,
    authorization: Option<Authorization>,
    bearer_token: Option<IgnoredAny>,
    bearer_token_file: Option<IgnoredAny>,
    basic_auth: Option<IgnoredAny>,
    oauth2: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct Authorization {
    #[serde(rename = "type")]
    kind: Option<String>,
}

impl HttpSdConfig {
    /// How the request is authorised. Prometheus's `authorization` type defaults
    /// to Bearer.
    fn auth(&self) -> HttpSdAuth {
        if let Some(a) = &self.authorization {
            return match a.kind.as_deref() {
                None => HttpSdAuth::Bearer,
                Some(k) if k.eq_ignore_ascii_case("bearer") => HttpSdAuth::Bearer,
                Some(k) => HttpSdAuth::Other(format!("authorization type {k}")),
            };
        }
        if self.bearer_token.is_some() || self.bearer_token_file.is_some() {
            return HttpSdAuth::Bearer;
        }
        if self.basic_auth.is_some() {
            return HttpSdAuth::Other("basic_auth".into());
        }
        if self.oauth2.is_some() {
            return HttpSdAuth::Other("oauth2".into());
        }
        HttpSdAuth::None
    }
}

#[derive(Debug, Deserialize)]
struct FileSdConfig {
    #[serde(default)]
    files: Vec<String>,
}

/// A label value as YAML may write it: `cluster: prod`, `shard: 3`, `on: true`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Integer(n) => n.to_string(),
            Scalar::Float(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// One `remote_write` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteWriteEntry {
    pub url: String,
    /// Whether a `sigv4` block is present, and its `region` if set.
    pub sigv4: Option<Option<String>>,
}

/// How one `http_sd_configs` entry authorises its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpSdAuth {
    None,
    /// `authorization` (type Bearer, the default) or `bearer_token(_file)`.
    Bearer,
    /// Anything else, named (`basic_auth`, `oauth2`, `authorization type Basic`).
    Other(String),
}

/// One `http_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSdEntry {
    pub job: String,
    pub url: String,
    pub auth: HttpSdAuth,
}

/// What the lint and the probe read from a Prometheus configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromConfig {
    pub remote_write: Vec<RemoteWriteEntry>,
    pub external_labels: BTreeMap<String, String>,
    /// Every `file_sd_configs` pattern, with its job name, relative patterns resolved
    /// against the configuration file's directory.
    pub file_sd: Vec<(String, PathBuf)>,
    /// Every `http_sd_configs` entry.
    pub http_sd: Vec<HttpSdEntry>,
    /// Entries of `rule_files`, `remote_read`, and whether `alerting` names an
    /// Alertmanager or a relabel rule: what agent mode refuses.
    pub rule_files: usize,
    pub remote_read: usize,
    pub alerting: bool,
}

/// Why a Prometheus configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PromConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Prometheus configuration: {message}")]
    Yaml { path: PathBuf, message: String },
}

impl PromConfigError {
    /// A small fixed set, for logs and `check`.
    pub fn kind(&self) -> &'static str {
        match self {
            PromConfigError::Read { .. } => "read",
            PromConfigError::Yaml { .. } => "yaml",
        }
    }
}

impl PromConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, PromConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| PromConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).map_err(|message| PromConfigError::Yaml {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the YAML `text`; relative file_sd patterns are resolved against `base`.
    /// An empty document is an empty configuration.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_saphyr::from_str::<Option<File>>(text)
                .map_err(|e| e.to_string())?
                .unwrap_or_default()
        };
        let remote_write = file
            .remote_write
            .into_iter()
            .filter_map(|rw| {
                Some(RemoteWriteEntry {
                    url: rw.url?,
                    sigv4: rw.sigv4.map(|s| s.region),
                })
            })
            .collect();
        let external_labels = file
            .global
            .external_labels
            .into_iter()
            .map(|(k, v)| (k, v.into_text()))
            .collect();
        let file_sd = file
            .scrape_configs
            .iter()
            .flat_map(|sc| {
                let job = &sc.job_name;
                sc.file_sd_configs
                    .iter()
                    .flat_map(|f| &f.files)
                    .map(move |pat| (job.clone(), base.join(pat)))
            })
            .collect();
        let http_sd = file
            .scrape_configs
            .iter()
            .flat_map(|sc| {
                sc.http_sd_configs.iter().filter_map(|h| {
                    Some(HttpSdEntry {
                        job: sc.job_name.clone(),
                        url: h.url.clone()?,
                        auth: h.auth(),
                    })
                })
            })
            .collect();
        let count = |v: Option<Vec<IgnoredAny>>| v.map_or(0, |v| v.len());
        let alerting = file.alerting.unwrap_or_default();
        Ok(PromConfig {
            remote_write,
            external_labels,
            file_sd,
            http_sd,
            rule_files: count(file.rule_files),
            remote_read: count(file.remote_read),
            alerting: count(alerting.alertmanagers) + count(alerting.alert_relabel_configs) > 0,
        })
    }

    /// The remote_write entry to probe: the first whose URL is an AMP one (`is_amp`
    /// says which), else the first.
    pub fn probe_entry(&self, is_amp: impl Fn(&str) -> bool) -> Option<&RemoteWriteEntry> {
        self.remote_write
            .iter()
            .find(|r| is_amp(&r.url))
            .or_else(|| self.remote_write.first())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parts_it_needs_and_ignores_the_rest() {
        let c = PromConfig::parse(
            r#"
global:
  scrape_interval: 15s
  external_labels: {cluster: prod, __replica__: r1, shard: 3}
remote_write:
  - url: http://127.0.0.1:1/api/v1/write
    queue_config: {max_samples_per_send: 1000}
  - url: https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-1/api/v1/remote_write
    sigv4: {region: us-west-2}
  - url: https://aps-workspaces.us-west-2.amazonaws.com/workspaces/ws-2/api/v1/remote_write
    sigv4: {}
scrape_configs:
  - job_name: ecs
    file_sd_configs:
      - files: ['sd/*.json', '/abs/x.json']
        refresh_interval: 1m
  - job_name: self
    static_configs: [{targets: ['localhost:9090']}]
"#,
            Path::new("/etc/prometheus"),
        )
        .unwrap();
        assert_eq!(c.external_labels["cluster"], "prod");
        assert_eq!(c.external_labels["shard"], "3");
        assert_eq!(c.remote_write[0].sigv4, None);
        assert_eq!(c.remote_write[1].sigv4, Some(Some("us-west-2".into())));
        assert_eq!(c.remote_write[2].sigv4, Some(None));
        assert_eq!(
            c.file_sd,
            vec![
                ("ecs".into(), PathBuf::from("/etc/prometheus/sd/*.json")),
                ("ecs".into(), PathBuf::from("/abs/x.json")),
            ]
        );
        let amp = c.probe_entry(|u| u.contains("aps-workspaces")).unwrap();
        assert!(amp.url.contains("ws-1"));
        assert!(
            c.probe_entry(|_| false)
                .unwrap()
                .url
                .starts_with("http://127")
        );
    }

    #[test]
    fn reads_http_sd_and_what_agent_mode_refuses() {
        let c = PromConfig::parse(
            r#"
rule_files: [a.yml, b.yml]
alerting:
  alertmanagers:
    - static_configs: [{targets: ['am:9093']}]
remote_read:
  - url: http://r/read
scrape_configs:
  - job_name: ecs
    http_sd_configs:
      - url: http://cloudmap-sd:9469/sd/targets?shard=0/2
        authorization: {type: Bearer, credentials_file: /t}
        refresh_interval: 30s
      - url: http://a/sd/targets
        authorization: {credentials: x}
      - url: http://b/sd/targets
        bearer_token_file: /t
      - url: http://c/sd/targets
        basic_auth: {username: u, password: p}
      - url: http://d/sd/targets
"#,
            Path::new("/"),
        )
        .unwrap();
        assert_eq!((c.rule_files, c.remote_read, c.alerting), (2, 1, true));
        let auth: Vec<_> = c.http_sd.iter().map(|h| h.auth.clone()).collect();
        assert_eq!(
            auth,
            [
                HttpSdAuth::Bearer,
                HttpSdAuth::Bearer,
                HttpSdAuth::Bearer,
                HttpSdAuth::Other("basic_auth".into()),
                HttpSdAuth::None
            ]
        );
        assert_eq!(c.http_sd[0].job, "ecs");
        assert!(c.http_sd[0].url.ends_with("shard=0/2"));
        let empty = PromConfig::parse(
            "rule_files:\nalerting:\n  alertmanagers: []\n",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            (empty.rule_files, empty.remote_read, empty.alerting),
            (0, 0, false)
        );
    }

    #[test]
    fn empty_and_broken_files() {
        assert_eq!(
            PromConfig::parse("", Path::new("/")).unwrap(),
            PromConfig::default()
        );
        assert_eq!(
            PromConfig::parse("# only a comment\n", Path::new("/")).unwrap(),
            PromConfig::default()
        );
        let err = PromConfig::parse("remote_write: [url: x", Path::new("/")).unwrap_err();
        assert!(!err.is_empty());
        let err = PromConfig::parse("remote_write: 3\n", Path::new("/")).unwrap_err();
        assert!(!err.is_empty());
    }
}
