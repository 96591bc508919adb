//! Prometheus's text exposition (format 0.0.4 or OpenMetrics), reduced to the
//! remote_storage readings of each remote_write queue. Pure.

use std::collections::BTreeMap;

/// The raw readings of one remote_write queue in one scrape of Prometheus.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueReading {
    pub sent: Option<f64>,
    pub failed: Option<f64>,
    pub retried: Option<f64>,
    pub dropped: Option<f64>,
    pub pending: Option<f64>,
    /// Highest timestamp sent (`queue_highest_sent_timestamp_seconds`).
    pub highest_sent: Option<f64>,
    /// Highest timestamp seen by this queue (3.x `queue_highest_timestamp_seconds`).
    pub highest: Option<f64>,
}

/// One scrape of Prometheus's `/metrics`, reduced to what the watch uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// By queue name (`remote_name` label; the `url` label when there is none).
    pub queues: BTreeMap<String, QueueReading>,
    /// 2.x `prometheus_remote_storage_highest_timestamp_in_seconds` (not per queue).
    pub highest: Option<f64>,
    /// Prometheus runs in agent mode: it exposes `prometheus_agent_*` (its WAL-only
    /// storage) where a server exposes `prometheus_tsdb_*`.
    pub agent: bool,
}

const P: &str = "prometheus_remote_storage_";

/// Which reading a remote_storage metric feeds; current names and older aliases.
fn field_of(name: &str) -> Option<fn(&mut QueueReading) -> &mut Option<f64>> {
    let short = name.strip_prefix(P)?;
    Some(match short {
        "samples_total" | "succeeded_samples_total" => |q| &mut q.sent,
        "samples_failed_total" | "failed_samples_total" => |q| &mut q.failed,
        "samples_retried_total" | "retried_samples_total" => |q| &mut q.retried,
        "samples_dropped_total" | "dropped_samples_total" => |q| &mut q.dropped,
        "samples_pending" | "pending_samples" => |q| &mut q.pending,
        "queue_highest_sent_timestamp_seconds" => |q| &mut q.highest_sent,
        "queue_highest_timestamp_seconds" => |q| &mut q.highest,
        _ => return None,
    })
}

/// Parses Prometheus's text exposition (format 0.0.4 or OpenMetrics) into per-queue
/// readings. Lines it does not need, and lines it cannot parse, are ignored.
pub fn parse_exposition(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("prometheus_agent_") {
            scrape.agent = true;
            continue;
        }
        if line.is_empty() || line.starts_with('#') || !line.starts_with(P) {
            continue;
        }
        let Some((name, labels, value)) = parse_sample_line(line) else {
            continue;
        };
        if name == "prometheus_remote_storage_highest_timestamp_in_seconds" {
            scrape.highest = Some(scrape.highest.unwrap_or(f64::MIN).max(value));
            continue;
        }
        let Some(field) = field_of(name) else {
            continue;
        };
        let queue = labels
            .iter()
            .find(|(k, _)| k == "remote_name")
            .or_else(|| labels.iter().find(|(k, _)| k == "url"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let slot = field(scrape.queues.entry(queue).or_default());
        let is_max = name.ends_with("timestamp_seconds");
        *slot = Some(match (*slot, is_max) {
            (Some(old), true) => old.max(value),
            (Some(old), false) => old + value,
            (None, _) => value,
        });
    }
    scrape
}

/// `name{k="v",...} value [timestamp]` -> (name, labels, value).
/// Label names and values of one sample line, in order.
type LabelPairs = Vec<(String, String)>;

fn parse_sample_line(line: &str) -> Option<(&str, LabelPairs, f64)> {
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let mut chars = rest.char_indices().skip(1).peekable();
        let mut end = None;
        loop {
            // Skip separators, find the label name.
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                match c {
                    '}' => {
                        end = Some(i);
                        break;
                    }
                    '=' => break,
                    ',' | ' ' => {}
                    c => key.push(c),
                }
            }
            if end.is_some() {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                if escaped {
                    value.push(if c == 'n' { '\n' } else { c });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    closed = true;
                    break;
                } else {
                    value.push(c);
                }
            }
            if !closed {
                return None;
            }
            labels.push((key, value));
        }
        rest = &rest[end? + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}
