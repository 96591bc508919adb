//! The file_sd writer: atomic, change-only, seen once by Prometheus.
//!
//! A write goes to a temporary file (`.<name>.<random>.tmp`, which a `*.json` glob
//! never matches) in the hidden staging directory beside the file
//! ([`STAGING_DIR`], on the same filesystem), is fsynced, renamed over the file, and
//! both directories are fsynced. A reader sees the old file or the new one, never a
//! partial or empty one. Prometheus watches the file's directory (inotify, not
//! recursive) and re-reads every file on each event there: a write in the staging
//! directory shows it one event, the rename, so one change costs it one scan. When
//! the staging directory cannot be used, temporary files go beside the file as a
//! fallback (said in the log and by `check`), and every write chunk is an event.
//! Content equal to what is already on disk is not written again. Blocking I/O: call
//! from `spawn_blocking`.
//!
//! The directory and temporary-file rules ([`directory_of`], [`temp_name`],
//! [`prepare_staging`], [`try_directory`]) are public: `check` uses them, so it tests
//! what the writer does.

use std::ffi::OsString;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

/// Result of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    Written,
    Unchanged,
}

impl Publish {
    /// `written` or `unchanged`: the metric label and the log word.
    pub fn as_str(self) -> &'static str {
        match self {
            Publish::Written => "written",
            Publish::Unchanged => "unchanged",
        }
    }
}

/// The class of a failed write, a small fixed set (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteReason {
    NoSpace,
    ReadOnly,
    MissingDirectory,
    PermissionDenied,
    Other,
}

impl WriteReason {
    pub const ALL: [WriteReason; 5] = [
        WriteReason::NoSpace,
        WriteReason::ReadOnly,
        WriteReason::MissingDirectory,
        WriteReason::PermissionDenied,
        WriteReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WriteReason::NoSpace => "no_space",
            WriteReason::ReadOnly => "read_only",
            WriteReason::MissingDirectory => "missing_directory",
            WriteReason::PermissionDenied => "permission_denied",
            WriteReason::Other => "other",
        }
    }

    /// What an operator does about it.
    fn hint(self) -> Option<&'static str> {
        match self {
            WriteReason::NoSpace => Some("the filesystem is full: free space or grow the volume"),
            WriteReason::ReadOnly => {
                Some("the filesystem is mounted read-only: mount the volume read-write")
            }
            WriteReason::MissingDirectory => {
                Some("the directory does not exist: create it or mount the volume")
            }
            WriteReason::PermissionDenied => Some(
                "the sidecar's user may not write there: fix the owner or mode of the directory",
            ),
            WriteReason::Other => None,
        }
    }
}

/// `-` as an output path: print to stdout instead of writing a file.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The directory a file is written in (and its temporary files): its parent, or
/// `.` for a bare file name.
pub fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The prefix of the temporary files of a file named `name`: `.<name>.`; they end
/// in `.tmp`, so a `*.json` glob never matches them.
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.")
}

/// What a temporary file of a file named `name` looks like (`random` stands for
/// the random part): for checking globs against it.
pub fn temp_name(name: &str, random: &str) -> String {
    format!("{}{random}.tmp", temp_prefix(name))
}

/// A new temporary file of the file named `name`, in `dir`, named as [`temp_name`]
/// says; removed when dropped.
fn new_temp_file(dir: &Path, name: &str) -> io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix(name))
        .suffix(".tmp")
        .tempfile_in(dir)
}

/// The hidden directory, inside the file's own directory, where the temporary
/// files are written. Not a `*.json` name, and file_sd globs never descend into a
/// subdirectory, so Prometheus never reads it; its own watch of the file's directory
/// does not see what happens inside it.
pub const STAGING_DIR: &str = ".cloudmap-sd-staging";

/// Where a writer's temporary files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staging {
    /// In the staging directory (this path): the file's directory sees one event
    /// per write, the rename.
    Hidden(PathBuf),
    /// Beside the file, because the staging directory cannot be used (why, in
    /// words): the file's directory sees every write chunk.
    Beside(String),
}

impl Staging {
    /// The directory temporary files go to, for a file in `dir`.
    fn dir<'a>(&'a self, dir: &'a Path) -> &'a Path {
        match self {
            Staging::Hidden(p) => p,
            Staging::Beside(_) => dir,
        }
    }
}

/// Makes (when missing) and checks the staging directory for the file at `path`:
/// a directory, on the filesystem of the file's directory (a rename cannot cross
/// filesystems), where a temporary file named as the writer names them can be
/// created. Ok: the staging directory, and whether this call created it. Err: why
/// it cannot be used, in words.
pub fn prepare_staging(path: &Path) -> Result<(PathBuf, bool), String> {
    let dir = directory_of(path);
    let staging = dir.join(STAGING_DIR);
    let created = match fs::DirBuilder::new().mode(0o755).create(&staging) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(format!("cannot create {}: {e}", staging.display())),
    };
    let check = || {
        let inside = fs::metadata(&staging)
            .map_err(|e| format!("cannot read {}: {e}", staging.display()))?;
        if !inside.is_dir() {
            return Err(format!("{} is not a directory", staging.display()));
        }
        let outside =
            fs::metadata(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        if inside.dev() != outside.dev() {
            return Err(format!(
                "{} is on another filesystem than {} (a rename cannot cross it)",
                staging.display(),
                dir.display()
            ));
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        new_temp_file(&staging, &name)
            .map(drop)
            .map_err(|e| format!("cannot create a file in {}: {e}", staging.display()))
    };
    match check() {
        Ok(()) => Ok((staging, created)),
        Err(why) => {
            if created {
                let _ = fs::remove_dir(&staging);
            }
            Err(why)
        }
    }
}

/// What [`try_directory`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The file's directory.
    pub dir: PathBuf,
    /// Where the writer's temporary files would go.
    pub staging: Staging,
}

/// Proves that files can be published at `path` the way the writer publishes them:
/// the staging directory is made (or the fallback noted), a temporary file named as
/// the writer names them is created there, written, fsynced, renamed into the
/// file's directory and removed; a staging directory made here is removed again.
/// Err: what failed, in words.
pub fn try_directory(path: &Path) -> Result<Tried, String> {
    let dir = directory_of(path);
    let name = format!("cloudmap-sd-check-{}", std::process::id());
    let probe = dir.join(&name);
    let (staging, created) = match prepare_staging(&probe) {
        Ok((p, created)) => (Staging::Hidden(p), created),
        Err(why) => (Staging::Beside(why), false),
    };
    let tried = try_publish(&dir, staging.dir(&dir), &name);
    if let (true, Staging::Hidden(p)) = (created, &staging) {
        let _ = fs::remove_dir(p);
    }
    tried.map(|()| Tried { dir, staging })
}

/// A temporary file in `temp_dir`, written, fsynced, renamed into `dir` and removed.
fn try_publish(dir: &Path, temp_dir: &Path, name: &str) -> Result<(), String> {
    let mut tmp = new_temp_file(temp_dir, name)
        .map_err(|e| format!("cannot create a file in {}: {e}", temp_dir.display()))?;
    tmp.write_all(b"[]\n")
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write in {}: {e}", temp_dir.display()))?;
    let renamed = dir.join(temp_name(name, "renamed"));
    tmp.persist(&renamed)
        .map_err(|e| format!("cannot rename into {}: {}", dir.display(), e.error))?;
    fs::remove_file(&renamed).map_err(|e| format!("cannot remove {}: {e}", renamed.display()))
}

/// A failed write, naming the step and the path. The previous file is intact.
#[derive(Debug, thiserror::Error)]
#[error("cannot {step} {path}: {source}{}", self.hint().map(|h| format!(" ({h})")).unwrap_or_default())]
pub struct WriteError {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// The class of the failure.
    pub fn reason(&self) -> WriteReason {
        match self.source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => WriteReason::NoSpace,
            io::ErrorKind::ReadOnlyFilesystem => WriteReason::ReadOnly,
            io::ErrorKind::NotFound => WriteReason::MissingDirectory,
            io::ErrorKind::PermissionDenied => WriteReason::PermissionDenied,
            _ => WriteReason::Other,
        }
    }

    fn hint(&self) -> Option<&'static str> {
        self.reason().hint()
    }
}

/// Writes one file_sd file.
#[derive(Debug)]
pub struct FileSd {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    /// What the file holds, as far as we know: its length and md5 (a digest, not
    /// a copy: at 10,000 targets the content is about 12 MB).
    current: Option<(u64, [u8; 16])>,
    /// Where temporary files go; decided at start, and again before a write while
    /// the staging directory cannot be used (the volume may come later).
    staging: Staging,
}

impl FileSd {
    /// A writer for `path`. Makes the staging directory (or says in the log why
    /// temporary files go beside the file), reads what the file holds now (so a
    /// restart with the same targets does not rewrite it) and removes temporary
    /// files a killed process left, in both places.
    pub fn open(path: &Path) -> Self {
        let staging = decide_staging(path);
        log_staging(path, None, &staging);
        let mut w = FileSd {
            path: path.to_path_buf(),
            dir: directory_of(path),
            name: path.file_name().map(OsString::from).unwrap_or_default(),
            current: None,
            staging,
        };
        w.current = fs::read(&w.path).ok().map(|c| digest(&c));
        w.remove_stale_temp_files();
        w
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where temporary files go now.
    pub fn staging(&self) -> &Staging {
        &self.staging
    }

    /// Decides again where temporary files go; logs a change.
    fn restage(&mut self) {
        let next = decide_staging(&self.path);
        log_staging(&self.path, Some(&self.staging), &next);
        self.staging = next;
    }

    fn temp_prefix(&self) -> String {
        temp_prefix(&self.name.to_string_lossy())
    }

    fn remove_stale_temp_files(&self) {
        self.remove_stale_temp_files_in(&self.dir);
        if let Staging::Hidden(staging) = &self.staging {
            self.remove_stale_temp_files_in(staging);
        }
    }

    fn remove_stale_temp_files_in(&self, dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        let prefix = self.temp_prefix();
        for e in entries.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with(&prefix) && n.ends_with(".tmp") && fs::remove_file(e.path()).is_ok() {
                info!(file = %e.path().display(), "removed a temporary file left by an earlier run");
            }
        }
    }

    /// True when the file on disk is known to hold `content`.
    fn is_current(&self, content: &[u8]) -> bool {
        self.current == Some(digest(content)) && self.still_current()
    }

    /// True when the file still holds what was last published or read: it is
    /// there with that length. A cheap check for content known to be unchanged.
    pub fn still_current(&self) -> bool {
        self.current
            .is_some_and(|(len, _)| fs::metadata(&self.path).is_ok_and(|m| m.len() == len))
    }

    /// Makes the file hold `content`: nothing when it already does, else an atomic
    /// replace. On error the previous file is untouched and no temp file remains.
    pub fn publish(&mut self, content: &[u8]) -> Result<Publish, WriteError> {
        if self.is_current(content) {
            return Ok(Publish::Unchanged);
        }
        self.replace(content)?;
        self.current = Some(digest(content));
        debug!(file = %self.path.display(), bytes = content.len(), "file written");
        Ok(Publish::Written)
    }

    /// Makes the file hold what `fill` writes, streamed to the temporary file and
    /// never held in memory (at 10,000 targets the content is about 12 MB). When
    /// that is what the file holds already, the temporary file is removed and
    /// nothing changes; else an atomic replace. On error the previous file is
    /// untouched and no temp file remains.
    pub fn publish_with(
        &mut self,
        fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Publish, WriteError> {
        use md5::{Digest, Md5};
        let tmp = self.temp_file()?;
        let written = {
            let mut file = tmp.as_file();
            let mut w = Hashing {
                inner: io::BufWriter::with_capacity(64 * 1024, &mut file),
                md5: Md5::new(),
                len: 0,
            };
            fill(&mut w)
                .and_then(|()| w.inner.flush())
                .map_err(err("write", tmp.path()))?;
            (w.len, w.md5.finalize().into())
        };
        if self.current == Some(written) && self.still_current() {
            return Ok(Publish::Unchanged);
        }
        self.commit(tmp)?;
        self.current = Some(written);
        debug!(file = %self.path.display(), bytes = written.0, "file written");
        Ok(Publish::Written)
    }

    /// A new temporary file in the staging directory. While temporary files go
    /// beside the file, or when the staging directory fails, where they go is
    /// decided again first.
    fn temp_file(&mut self) -> Result<tempfile::NamedTempFile, WriteError> {
        if matches!(self.staging, Staging::Beside(_)) {
            self.restage();
        }
        match self.try_temp_file() {
            Err(_) if matches!(self.staging, Staging::Hidden(_)) => {
                self.restage();
                self.try_temp_file()
            }
            r => r,
        }
    }

    fn try_temp_file(&self) -> Result<tempfile::NamedTempFile, WriteError> {
        let dir = self.staging.dir(&self.dir);
        new_temp_file(dir, &self.name.to_string_lossy())
            .map_err(err("create a temporary file in", dir))
    }

    fn replace(&mut self, content: &[u8]) -> Result<(), WriteError> {
        let mut tmp = self.temp_file()?;
        tmp.write_all(content)
            .and_then(|()| tmp.flush())
            .map_err(err("write", tmp.path()))?;
        self.commit(tmp)
    }

    /// Makes a written temporary file the file: permissions, fsync, rename, fsync
    /// of the file's directory (the new name lasts), then of the staging directory
    /// when it came from there (the old name is gone for good).
    fn commit(&self, tmp: tempfile::NamedTempFile) -> Result<(), WriteError> {
        // Readable by a Prometheus running as another user; tempfile creates 0600.
        tmp.as_file()
            .set_permissions(Permissions::from_mode(0o644))
            .map_err(err("set permissions of", tmp.path()))?;
        tmp.as_file().sync_all().map_err(err("fsync", tmp.path()))?;
        let from = directory_of(tmp.path());
        // On failure `persist` hands the temp file back; dropping it deletes it.
        tmp.persist(&self.path)
            .map_err(|e| err("rename a temporary file onto", &self.path)(e.error))?;
        sync_dir(&self.dir)?;
        if from != self.dir {
            sync_dir(&from)?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync directory", dir))
}

/// The staging directory when it can be used, else why not.
fn decide_staging(path: &Path) -> Staging {
    match prepare_staging(path) {
        Ok((p, _)) => Staging::Hidden(p),
        Err(why) => Staging::Beside(why),
    }
}

/// Says where temporary files go, when that changed (`was`: None at start).
fn log_staging(path: &Path, was: Option<&Staging>, now: &Staging) {
    let file = path.display();
    match (was, now) {
        (Some(Staging::Beside(a)), Staging::Beside(b)) if a == b => {}
        (Some(Staging::Hidden(_)), Staging::Hidden(_)) => {}
        (_, Staging::Beside(why)) => warn!(
            file = %file,
            reason = %why,
            "the staging directory cannot be used, so temporary files go beside the file: \
             Prometheus sees every write chunk there and re-reads its files for each \
             (several file_sd scans per change instead of one)"
        ),
        (Some(Staging::Beside(_)), Staging::Hidden(p)) => info!(
            file = %file,
            staging = %p.display(),
            "the staging directory can be used again; temporary files are written there"
        ),
        (None, Staging::Hidden(p)) => debug!(
            file = %file,
            staging = %p.display(),
            "temporary files are written in the staging directory"
        ),
    }
}

fn err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError { step, path, source }
}

/// A writer that counts and hashes what goes through it.
struct Hashing<W> {
    inner: W,
    md5: md5::Md5,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use md5::Digest;
        let n = self.inner.write(buf)?;
        self.md5.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn digest(content: &[u8]) -> (u64, [u8; 16]) {
    use md5::{Digest, Md5};
    (content.len() as u64, Md5::digest(content).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Temporary files in `dir` and in its staging directory.
    fn temp_files(dir: &Path) -> Vec<String> {
        [dir.to_path_buf(), dir.join(STAGING_DIR)]
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flat_map(|d| d.flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_then_skips_unchanged_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.json");
        let mut w = FileSd::open(&path);
        assert_eq!(w.publish(b"[]\n").unwrap(), Publish::Written);
        assert_eq!(fs::read(&path).unwrap(), b"[]\n");
        let inode = fs::metadata(&path).unwrap();
        assert_eq!(w.publish(b"[]\n").unwrap(), Publish::Unchanged);
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            std::os::unix::fs::MetadataExt::ino(&inode)
        );
        assert_eq!(w.publish(b"[1]\n").unwrap(), Publish::Written);
        assert_eq!(fs::read(&path).unwrap(), b"[1]\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn a_restart_with_the_same_content_does_not_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        fs::write(&path, b"[x]").unwrap();
        let mut w = FileSd::open(&path);
        assert_eq!(w.publish(b"[x]").unwrap(), Publish::Unchanged);
    }

    #[test]
    fn a_deleted_file_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut w = FileSd::open(&path);
        w.publish(b"[]").unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(w.publish(b"[]").unwrap(), Publish::Written);
        assert!(path.exists());
    }

    #[test]
    fn stale_temp_files_are_removed_and_names_never_match_the_glob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let staging = dir.path().join(STAGING_DIR);
        fs::create_dir(&staging).unwrap();
        fs::write(dir.path().join(".t.json.abc123.tmp"), b"partial").unwrap();
        fs::write(staging.join(".t.json.def456.tmp"), b"partial").unwrap();
        fs::write(staging.join(".u.json.def456.tmp"), b"another file's").unwrap();
        fs::write(dir.path().join("other.tmp"), b"keep").unwrap();
        let w = FileSd::open(&path);
        let mut left = temp_files(dir.path());
        left.sort();
        assert_eq!(left, vec![".u.json.def456.tmp", "other.tmp"]);
        let p = w.temp_prefix();
        assert!(p.starts_with('.') && !p.ends_with(".json"));
        assert!(!STAGING_DIR.ends_with(".json") && STAGING_DIR.starts_with('.'));
    }

    #[test]
    fn temporary_files_are_written_in_the_staging_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let mut w = FileSd::open(&path);
        let staging = dir.path().join(STAGING_DIR);
        assert_eq!(w.staging(), &Staging::Hidden(staging.clone()));
        assert!(staging.is_dir());
        let tmp = w.temp_file().unwrap();
        assert_eq!(tmp.path().parent(), Some(staging.as_path()));
        drop(tmp);
        assert_eq!(w.publish(b"[]").unwrap(), Publish::Written);
        assert_eq!(fs::read(&path).unwrap(), b"[]");
        assert!(temp_files(dir.path()).is_empty());
        // Someone removed the staging directory: made again at the next write.
        fs::remove_dir(&staging).unwrap();
        assert_eq!(w.publish(b"[1]").unwrap(), Publish::Written);
        assert!(staging.is_dir());
        assert_eq!(w.staging(), &Staging::Hidden(staging));
    }

    #[test]
    fn without_a_staging_directory_temporary_files_go_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let blocker = dir.path().join(STAGING_DIR);
        fs::write(&blocker, b"not a directory").unwrap();
        let mut w = FileSd::open(&path);
        match w.staging() {
            Staging::Beside(why) => assert!(why.contains("not a directory"), "{why}"),
            s => panic!("{s:?}"),
        }
        let tmp = w.temp_file().unwrap();
        assert_eq!(tmp.path().parent(), Some(dir.path()));
        drop(tmp);
        assert_eq!(w.publish(b"[]").unwrap(), Publish::Written);
        assert_eq!(fs::read(&path).unwrap(), b"[]");
        assert!(temp_files(dir.path()).is_empty());
        // Once it can be made, the next write uses it.
        fs::remove_file(&blocker).unwrap();
        assert_eq!(w.publish(b"[1]").unwrap(), Publish::Written);
        assert_eq!(w.staging(), &Staging::Hidden(blocker));
    }

    #[test]
    fn a_directory_is_tried_with_the_writer_s_own_temporary_names() {
        let dir = tempfile::tempdir().unwrap();
        let got = try_directory(&dir.path().join("t.json")).unwrap();
        assert_eq!(got.dir, dir.path());
        let staging = dir.path().join(STAGING_DIR);
        assert_eq!(got.staging, Staging::Hidden(staging.clone()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left");
        // A staging directory that is there already stays.
        fs::create_dir(&staging).unwrap();
        try_directory(&dir.path().join("t.json")).unwrap();
        assert!(staging.is_dir() && temp_files(dir.path()).is_empty());
        fs::remove_dir(&staging).unwrap();
        fs::write(&staging, b"").unwrap();
        let got = try_directory(&dir.path().join("t.json")).unwrap();
        assert!(matches!(got.staging, Staging::Beside(_)), "{got:?}");
        let err = try_directory(&dir.path().join("missing/t.json")).unwrap_err();
        assert!(err.contains("cannot create a file in"), "{err}");
        assert_eq!(directory_of(Path::new("t.json")), PathBuf::from("."));
        assert_eq!(temp_name("t.json", "x1"), ".t.json.x1.tmp");
        assert!(is_stdout(Path::new("-")) && !is_stdout(Path::new("t.json")));
    }

    #[test]
    fn failures_are_classified_for_operators() {
        let e = |kind| WriteError {
            step: "write",
            path: PathBuf::from("/sd/t.json"),
            source: io::Error::from(kind),
        };
        assert_eq!(e(io::ErrorKind::StorageFull).reason(), WriteReason::NoSpace);
        assert!(
            e(io::ErrorKind::StorageFull)
                .to_string()
                .contains("filesystem is full")
        );
        assert_eq!(
            e(io::ErrorKind::ReadOnlyFilesystem).reason(),
            WriteReason::ReadOnly
        );
        assert_eq!(
            e(io::ErrorKind::PermissionDenied).reason(),
            WriteReason::PermissionDenied
        );
        assert_eq!(e(io::ErrorKind::Interrupted).reason(), WriteReason::Other);
        assert!(!e(io::ErrorKind::Interrupted).to_string().contains('('));
    }

    #[test]
    fn missing_directory_is_a_clear_error_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sd");
        let path = sub.join("t.json");
        let mut w = FileSd::open(&path);
        assert!(matches!(w.staging(), Staging::Beside(_)));
        let e = w.publish(b"[]").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("create a temporary file in"), "{msg}");
        assert!(msg.contains(&sub.display().to_string()), "{msg}");
        assert_eq!(e.reason(), WriteReason::MissingDirectory);
        assert!(msg.contains("the directory does not exist"), "{msg}");
        fs::create_dir(&sub).unwrap();
        assert_eq!(w.publish(b"[]").unwrap(), Publish::Written);
        assert_eq!(w.staging(), &Staging::Hidden(sub.join(STAGING_DIR)));
    }
}
