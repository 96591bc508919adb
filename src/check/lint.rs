//! The lint of a Prometheus configuration for this sidecar: remote_write to AMP
//! signed for the right Region, the external labels AMP's HA de-duplication needs,
//! a file_sd glob that reads our file and never our temporary file, http_sd URLs
//! on our endpoints with the token they need, and in agent mode the sections agent
//! mode refuses. Pure.

use std::path::{Path, PathBuf};

use super::report::{Row, Status};
use crate::file_sd;
use crate::http_sd::query;
use crate::prom_config::{HttpSdAuth, PromConfig, PrometheusMode};
use crate::remote_write::amp_region;

/// Go's `filepath.Match` (what Prometheus's file_sd uses) for one path element:
/// `*`, `?`, `[...]` with ranges and `^`/`!` negation, `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // p starts after '['; returns (matched, length consumed including ']').
        let mut i = 0;
        let negate = matches!(p.first(), Some('^' | '!'));
        if negate {
            i += 1;
        }
        let mut matched = false;
        let mut first = true;
        while i < p.len() {
            if p[i] == ']' && !first {
                return Some((matched != negate, i + 1));
            }
            first = false;
            let lo = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
                i += 1;
                let h = if p[i] == '\\' {
                    i += 1;
                    *p.get(i)?
                } else {
                    p[i]
                };
                i += 1;
                h
            } else {
                lo
            };
            if lo <= c && c <= hi {
                matched = true;
            }
        }
        None
    }
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|k| go(&p[1..], &n[k..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => match n.first() {
                Some(&c) => match class(&p[1..], c) {
                    Some((true, len)) => go(&p[1 + len..], &n[1..]),
                    _ => false,
                },
                None => false,
            },
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// The lexical form of a path: `.` and `..` resolved without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// What the sidecar is set up to do, as far as the lint cares.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// The targets file; None: served at /sd/targets only (`--output none`).
    pub output: Option<&'a Path>,
    pub mode: PrometheusMode,
    /// `/sd/*` requires a bearer token.
    pub token: bool,
}

/// Lints a Prometheus configuration (server mode) for a sidecar that writes
/// `output` and asks no token.
pub fn lint(config: &PromConfig, output: &Path) -> Vec<Row> {
    lint_setup(
        config,
        Setup {
            output: Some(output),
            mode: PrometheusMode::Server,
            token: false,
        },
    )
}

/// Lints a Prometheus configuration for a sidecar set up as `setup` says.
pub fn lint_setup(config: &PromConfig, setup: Setup<'_>) -> Vec<Row> {
    let mut rows = lint_remote_write(config, setup.mode);
    rows.extend(lint_external_labels(config));
    if setup.mode == PrometheusMode::Agent {
        rows.push(lint_agent(config));
    }
    match setup.output {
        Some(output) => {
            rows.push(lint_file_sd(config, output));
            if !ours(config).is_empty() {
                rows.push(lint_http_sd(config, setup.token));
            }
        }
        None => rows.push(lint_http_sd(config, setup.token)),
    }
    rows
}

/// remote_write: a section at all, each URL's shape and its sigv4 Region.
fn lint_remote_write(config: &PromConfig, mode: PrometheusMode) -> Vec<Row> {
    let mut rows = Vec::new();
    if config.remote_write.is_empty() {
        rows.push(Row::new(
            "prometheus: remote_write",
            Status::Fail,
            match mode {
                PrometheusMode::Server => "no remote_write section: nothing is sent to AMP",
                PrometheusMode::Agent => {
                    "no remote_write section: an agent keeps no samples, so everything it scrapes is lost"
                }
            },
        ));
    }
    for (i, rw) in config.remote_write.iter().enumerate() {
        let name = format!("prometheus: remote_write[{i}] url");
        let Some(region) = amp_region(&rw.url) else {
            rows.push(Row::new(
                name,
                Status::Warn,
                format!(
                    "{} is not an AMP URL (https://aps-workspaces.<region>.amazonaws.com/workspaces/<id>/api/v1/remote_write)",
                    rw.url
                ),
            ));
            continue;
        };
        let uri: http::Uri = rw.url.parse().expect("amp_region parsed it");
        let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
        let shape_ok = uri.scheme_str() == Some("https")
            && matches!(segments.as_slice(), ["workspaces", id, "api", "v1", "remote_write"] if id.starts_with("ws-"));
        rows.push(if shape_ok {
            Row::new(name, Status::Pass, format!("AMP workspace in {region}"))
        } else {
            Row::new(
                name,
                Status::Fail,
                format!(
                    "{} should be https://aps-workspaces.{region}.amazonaws.com/workspaces/ws-<id>/api/v1/remote_write",
                    rw.url
                ),
            )
        });
        let name = format!("prometheus: remote_write[{i}] sigv4");
        rows.push(match &rw.sigv4 {
            None => Row::new(
                name,
                Status::Fail,
                format!("no sigv4 block: AMP refuses unsigned writes; add `sigv4: {{region: {region}}}`"),
            ),
            Some(None) => Row::new(
                name,
                Status::Warn,
                format!(
                    "sigv4 without region: Prometheus falls back to the default Region; set `region: {region}`"
                ),
            ),
            Some(Some(r)) if *r == region => Row::new(name, Status::Pass, format!("region {r}")),
            Some(Some(r)) => Row::new(
                name,
                Status::Fail,
                format!("sigv4 region {r} differs from the URL's Region {region}: signatures will be refused"),
            ),
        });
    }
    rows
}

/// The external labels AMP's HA de-duplication needs.
fn lint_external_labels(config: &PromConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    for (label, why) in [
        (
            "cluster",
            "AMP de-duplicates HA replicas by `cluster` + `__replica__`",
        ),
        (
            "__replica__",
            "each replica needs its own `__replica__` for AMP HA de-duplication (AMP drops the label)",
        ),
    ] {
        let name = format!("prometheus: external label {label}");
        rows.push(match config.external_labels.get(label) {
            Some(v) if !v.is_empty() => Row::new(name, Status::Pass, format!("{label}={v}")),
            _ => Row::new(
                name,
                Status::Fail,
                format!("external label `{label}` missing in global.external_labels: {why}"),
            ),
        });
    }
    rows
}

/// Agent mode refuses to load a configuration with rule_files, alerting or
/// remote_read (Prometheus 2.42: "field rule_files is not allowed in agent mode").
fn lint_agent(config: &PromConfig) -> Row {
    let name = "prometheus: agent mode";
    let mut refused = Vec::new();
    if config.rule_files > 0 {
        refused.push("rule_files (evaluate rules in AMP's ruler instead)");
    }
    if config.alerting {
        refused.push("alerting (use AMP's alert manager instead)");
    }
    if config.remote_read > 0 {
        refused.push("remote_read");
    }
    if refused.is_empty() {
        Row::new(name, Status::Pass, "no rule_files, alerting or remote_read")
    } else {
        Row::new(
            name,
            Status::Fail,
            format!(
                "agent mode refuses {}: Prometheus will not load this configuration",
                refused.join(", ")
            ),
        )
    }
}

/// The http_sd entries on our endpoints (`/sd/targets`, `/sd/hosts`), with their
/// query.
fn ours(config: &PromConfig) -> Vec<(&crate::prom_config::HttpSdEntry, Option<String>)> {
    config
        .http_sd
        .iter()
        .filter_map(|h| {
            let uri: http::Uri = h.url.parse().ok()?;
            matches!(uri.path(), "/sd/targets" | "/sd/hosts")
                .then(|| (h, uri.query().map(str::to_string)))
        })
        .collect()
}

/// http_sd: a URL on /sd/targets (needed without a file), valid shard parameters,
/// and a bearer token exactly when the sidecar requires one.
fn lint_http_sd(config: &PromConfig, token: bool) -> Row {
    let name = "prometheus: http_sd";
    let ours = ours(config);
    if !ours.iter().any(|(h, _)| h.url.contains("/sd/targets")) {
        return Row::new(
            name,
            Status::Fail,
            "no http_sd_configs URL on /sd/targets: with --output none Prometheus gets the targets only from http://<sidecar>/sd/targets",
        );
    }
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    for (h, q) in &ours {
        let who = format!("job {} ({})", h.job, h.url);
        if let Err(why) = query::parse(q.as_deref()) {
            problems.push(format!("{who}: {why}"));
        }
        match (&h.auth, token) {
            (HttpSdAuth::Bearer, true) | (HttpSdAuth::None, false) => {}
            (HttpSdAuth::None, true) => problems.push(format!(
                "{who}: no authorization, and the sidecar requires a bearer token (401): add authorization: {{type: Bearer, credentials_file: FILE}}"
            )),
            (HttpSdAuth::Other(what), true) => problems.push(format!(
                "{who}: {what}, and the sidecar takes only a bearer token (401): use authorization: {{type: Bearer, credentials_file: FILE}}"
            )),
            (_, false) => warnings.push(format!(
                "{who}: sends credentials, but the sidecar requires none (no --http-sd-bearer-token-file): /sd/* is open"
            )),
        }
    }
    let jobs: Vec<String> = ours.iter().map(|(h, _)| format!("job {}", h.job)).collect();
    if !problems.is_empty() {
        Row::new(name, Status::Fail, problems.join("; "))
    } else if !warnings.is_empty() {
        Row::new(name, Status::Warn, warnings.join("; "))
    } else {
        let how = if token {
            "with the bearer token"
        } else {
            "open"
        };
        Row::new(
            name,
            Status::Pass,
            format!("{} read /sd/* ({how})", jobs.join(", ")),
        )
    }
}

/// The file_sd patterns (`pattern (job name)`) that match our file.
struct Matches {
    /// In the file's own directory.
    exact: Vec<String>,
    /// By name only, in another directory.
    by_name: Vec<String>,
    /// That match the temporary file too.
    temp_hits: Vec<String>,
}

fn matches(config: &PromConfig, out: &Path, file: &str, temp: &str) -> Matches {
    let mut m = Matches {
        exact: Vec::new(),
        by_name: Vec::new(),
        temp_hits: Vec::new(),
    };
    for (job, pat) in &config.file_sd {
        let pat_name = pat
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = format!("{} (job {job})", pat.display());
        if glob_match(&pat_name, temp) {
            m.temp_hits.push(shown.clone());
        }
        if glob_match(&pat_name, file) {
            let same_dir = pat.parent().map(normalize) == out.parent().map(Path::to_path_buf);
            match same_dir {
                true => m.exact.push(shown),
                false => m.by_name.push(shown),
            }
        }
    }
    m
}

/// file_sd: a pattern that matches our output, and none that matches our
/// temporary file.
fn lint_file_sd(config: &PromConfig, output: &Path) -> Row {
    let name = "prometheus: file_sd glob";
    if file_sd::is_stdout(output) {
        return Row::new(name, Status::Skip, "--output - (stdout)");
    }
    let out = normalize(&std::env::current_dir().unwrap_or_default().join(output));
    let file = out
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = file_sd::temp_name(&file, "AbC123");
    let Matches {
        exact,
        by_name,
        temp_hits,
    } = matches(config, &out, &file, &temp);
    if !temp_hits.is_empty() {
        Row::new(
            name,
            Status::Fail,
            format!(
                "{} also matches the temporary file {temp}: Prometheus could read a half-written file; end the pattern in .json",
                temp_hits.join(", ")
            ),
        )
    } else if !exact.is_empty() {
        Row::new(
            name,
            Status::Pass,
            format!("{} matches {}", exact.join(", "), out.display()),
        )
    } else if !by_name.is_empty() {
        Row::new(
            name,
            Status::Warn,
            format!(
                "{} matches the name {file} in another directory: fine only if the volume is mounted there in the Prometheus container",
                by_name.join(", ")
            ),
        )
    } else if config.file_sd.is_empty() {
        Row::new(
            name,
            Status::Fail,
            "no file_sd_configs: Prometheus never reads the targets file",
        )
    } else {
        Row::new(
            name,
            Status::Fail,
            format!("no file_sd pattern matches {}", out.display()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
global:
  external_labels: {cluster: prod, __replica__: replica-1}
remote_write:
  - url: https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0a1b/api/v1/remote_write
    sigv4: {region: eu-west-1}
"#;

    fn rows(extra: &str, setup: Setup<'_>) -> Vec<Row> {
        let c = PromConfig::parse(&format!("{BASE}{extra}"), Path::new("/etc/prometheus")).unwrap();
        lint_setup(&c, setup)
    }

    fn row<'r>(rows: &'r [Row], name: &str) -> &'r Row {
        rows.iter()
            .find(|r| r.check == name)
            .unwrap_or_else(|| panic!("no row {name}: {rows:#?}"))
    }

    const SERVE: Setup<'static> = Setup {
        output: None,
        mode: PrometheusMode::Server,
        token: false,
    };

    const HTTP_SD: &str = r#"
scrape_configs:
  - job_name: ecs
    http_sd_configs:
      - url: http://cloudmap-sd.apps.local:9469/sd/targets?shard=1/2
        authorization: {type: Bearer, credentials_file: /run/secrets/token}
"#;

    #[test]
    fn agent_mode_fails_the_sections_it_refuses() {
        let agent = Setup {
            mode: PrometheusMode::Agent,
            ..SERVE
        };
        let r = rows(
            HTTP_SD,
            Setup {
                token: true,
                ..agent
            },
        );
        assert_eq!(row(&r, "prometheus: agent mode").status, Status::Pass);
        assert!(r.iter().all(|r| r.status == Status::Pass), "{r:#?}");
        let refused = format!(
            "{HTTP_SD}rule_files: [rules.yml]\nremote_read:\n  - url: http://r/read\nalerting:\n  alertmanagers:\n    - static_configs: [{{targets: ['am:9093']}}]\n"
        );
        let r = rows(&refused, agent);
        let a = row(&r, "prometheus: agent mode");
        assert_eq!(a.status, Status::Fail);
        for word in ["rule_files", "alerting", "remote_read"] {
            assert!(a.detail.contains(word), "{word}: {}", a.detail);
        }
        // A server may have them.
        let r = rows(&refused, SERVE);
        assert!(r.iter().all(|r| r.check != "prometheus: agent mode"));
        // Without remote_write an agent loses everything.
        let c = PromConfig::parse(HTTP_SD, Path::new("/")).unwrap();
        let r = lint_setup(&c, agent);
        assert!(
            row(&r, "prometheus: remote_write")
                .detail
                .contains("agent keeps no samples")
        );
    }

    #[test]
    fn without_a_file_prometheus_must_read_sd_targets_with_the_token() {
        let with_token = Setup {
            token: true,
            ..SERVE
        };
        let r = rows(HTTP_SD, with_token);
        let h = row(&r, "prometheus: http_sd");
        assert_eq!(h.status, Status::Pass, "{h:?}");
        assert!(r.iter().all(|r| r.check != "prometheus: file_sd glob"));

        let file_only = "scrape_configs:\n  - job_name: ecs\n    file_sd_configs:\n      - files: [/sd/*.json]\n";
        let h = row(&rows(file_only, with_token), "prometheus: http_sd").clone();
        assert_eq!(h.status, Status::Fail);
        assert!(h.detail.contains("/sd/targets"), "{h:?}");

        let no_auth = HTTP_SD.replace(
            "        authorization: {type: Bearer, credentials_file: /run/secrets/token}\n",
            "",
        );
        let h = row(&rows(&no_auth, with_token), "prometheus: http_sd").clone();
        assert_eq!(h.status, Status::Fail);
        assert!(h.detail.contains("401"), "{h:?}");
        let basic = HTTP_SD.replace(
            "authorization: {type: Bearer, credentials_file: /run/secrets/token}",
            "basic_auth: {username: u, password: p}",
        );
        let h = row(&rows(&basic, with_token), "prometheus: http_sd").clone();
        assert!(
            h.status == Status::Fail && h.detail.contains("basic_auth"),
            "{h:?}"
        );
        let h = row(&rows(HTTP_SD, SERVE), "prometheus: http_sd").clone();
        assert_eq!(
            h.status,
            Status::Warn,
            "a token the sidecar does not ask for"
        );
        let bad_shard = HTTP_SD.replace("shard=1/2", "shard=2/2");
        let h = row(&rows(&bad_shard, with_token), "prometheus: http_sd").clone();
        assert!(
            h.status == Status::Fail && h.detail.contains("INDEX/COUNT"),
            "{h:?}"
        );
    }

    #[test]
    fn with_a_file_http_sd_on_our_endpoints_is_linted_too() {
        let file = Setup {
            output: Some(Path::new("/sd/cloudmap-sd.json")),
            ..SERVE
        };
        let both = format!(
            "{}    file_sd_configs:\n      - files: [/sd/*.json]\n",
            HTTP_SD.replace("?shard=1/2", "")
        );
        let r = rows(&both, file);
        assert_eq!(row(&r, "prometheus: file_sd glob").status, Status::Pass);
        assert_eq!(row(&r, "prometheus: http_sd").status, Status::Warn);
        let file_only = "scrape_configs:\n  - job_name: ecs\n    file_sd_configs:\n      - files: [/sd/*.json]\n";
        assert!(
            rows(file_only, file)
                .iter()
                .all(|r| r.check != "prometheus: http_sd")
        );
    }
}
