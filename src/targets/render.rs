//! The file content of a plan, serialised one target at a time.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::TargetOptions;
use super::plan::{Plan, with_plan};

use crate::model::Snapshot;

/// Serialises a plan's groups one by one, as `TargetGroup`s would.
struct Lazy<'p, 'a>(&'p Plan<'a>);

#[derive(Serialize)]
struct GroupRef<'p> {
    targets: [&'p str; 1],
    labels: BTreeMap<&'p str, &'p str>,
}

impl Serialize for Lazy<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.entries.len()))?;
        for e in &self.0.entries {
            seq.serialize_element(&GroupRef {
                targets: [&e.addr],
                labels: self.0.labels(e),
            })?;
        }
        seq.end()
    }
}

/// Writes the file content of a snapshot to `w` as it is made: no label map per
/// target is kept and the content is never held whole, so memory stays small
/// whatever the number of targets. Byte for byte `to_json(&build(..).groups)`.
pub fn render_to(snapshot: &Snapshot, opts: &TargetOptions, w: &mut dyn Write) -> io::Result<()> {
    with_plan(snapshot, opts, |plan| {
        // serde_json writes many small pieces; batch them before they reach `w`.
        let mut w = io::BufWriter::with_capacity(64 * 1024, w);
        serde_json::to_writer_pretty(&mut w, &Lazy(&plan))?;
        w.write_all(b"\n")?;
        w.flush()
    })
}
