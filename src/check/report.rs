//! The report: one row per check, a table or JSON, and the verdict.

use std::fmt::Write as _;

use serde::Serialize;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

impl Row {
    pub fn new(check: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Row {
            check: check.into(),
            status,
            detail: detail.into(),
        }
    }
}

/// Every check's result, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    /// True when a check failed.
    pub fn failed(&self) -> bool {
        self.rows.iter().any(|r| r.status == Status::Fail)
    }

    /// A readable table: CHECK, RESULT, DETAIL, and a summary line.
    pub fn table(&self) -> String {
        let w = self
            .rows
            .iter()
            .map(|r| r.check.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = String::new();
        let _ = writeln!(out, "{:<w$}  {:<6}  DETAIL", "CHECK", "RESULT");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<w$}  {:<6}  {}",
                r.check,
                r.status.as_str(),
                r.detail
            );
        }
        let count = |s| self.rows.iter().filter(|r| r.status == s).count();
        let _ = writeln!(
            out,
            "\nchecks: {} pass, {} fail, {} warn, {} skip",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Warn),
            count(Status::Skip)
        );
        out
    }

    /// `{"ok": bool, "checks": [{"check", "status", "detail"}]}`.
    pub fn json(&self) -> String {
        serde_json::json!({ "ok": !self.failed(), "checks": self.rows }).to_string()
    }
}
