//! The lint of a Prometheus configuration for this sidecar: remote_write to AMP
//! signed for the right Region, the external labels AMP's HA de-duplication needs,
//! and a file_sd glob that reads our file and never our temporary file. Pure.

use std::path::{Path, PathBuf};

use super::report::{Row, Status};
use crate::file_sd;
use crate::prom_config::PromConfig;
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

/// Lints a Prometheus configuration for a sidecar that writes `output`.
pub fn lint(config: &PromConfig, output: &Path) -> Vec<Row> {
    let mut rows = lint_remote_write(config);
    rows.extend(lint_external_labels(config));
    rows.push(lint_file_sd(config, output));
    rows
}

/// remote_write: a section at all, each URL's shape and its sigv4 Region.
fn lint_remote_write(config: &PromConfig) -> Vec<Row> {
    let mut rows = Vec::new();
    if config.remote_write.is_empty() {
        rows.push(Row::new(
            "prometheus: remote_write",
            Status::Fail,
            "no remote_write section: nothing is sent to AMP",
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
