//! The agent's audit trail: one JSON object per line for every hand-out and
//! every refusal, appended (`O_APPEND`) to a file of mode 0600 and rotated
//! by size. Records go through a bounded queue to a thread of their own, so
//! a slow or failing disk never holds a client up: a record that cannot be
//! queued or written is counted and logged (once per 10 s), never waited for.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;

/// Records queued and not yet written before new ones are dropped (counted).
const QUEUE: usize = 4096;
/// The longest a write failure stays unlogged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// When the file is rotated, and how many rotated files are kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rotation {
    /// The size at which the file is rotated, in bytes.
    pub(crate) max_bytes: u64,
    /// Rotated files kept (`PATH.1` … `PATH.N`).
    pub(crate) keep: u32,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// One hand-out or refusal.
#[derive(Debug)]
pub(crate) struct Record {
    /// The client's uid (from the kernel).
    pub(crate) uid: u32,
    /// Its pid, when the kernel says.
    pub(crate) pid: Option<i32>,
    /// The endpoint asked.
    pub(crate) endpoint: &'static str,
    /// The tenant served, when one was.
    pub(crate) tenant: Option<String>,
    /// The secret reference, when a tenant's.
    pub(crate) secret: Option<String>,
    /// `served`, `refused`, `failed` or `cleared`.
    pub(crate) outcome: &'static str,
    /// The keyed hash of the value served.
    pub(crate) fingerprint: Option<String>,
    /// Why, for a refusal or failure.
    pub(crate) reason: Option<String>,
    /// Refusals of the same uid not recorded since its last record.
    pub(crate) suppressed: u64,
}

/// The audit trail's writer. Cheap to share; dropping it ends the thread
/// once the queue is written.
#[derive(Debug)]
pub(crate) struct AuditLog {
    queue: SyncSender<(SystemTime, Option<String>, Record)>,
    failures: Counter,
}

impl AuditLog {
    /// Starts the writer for `path`. The file is opened now, so a path that
    /// cannot be written is logged at start; service goes on either way.
    pub(crate) fn start(path: PathBuf, rotation: Rotation, failures: Counter) -> Self {
        let (queue, records) = std::sync::mpsc::sync_channel(QUEUE);
        let mut writer = Writer {
            path,
            rotation,
            file: None,
            failures: failures.clone(),
            last_logged: None,
            unlogged: 0,
        };
        if let Err(error) = writer.open() {
            writer.failed(&error);
        }
        let spawned = std::thread::Builder::new()
            .name("audit-log".to_owned())
            .spawn(move || writer.run(&records));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start the audit log's writer: nothing will be recorded");
        }
        Self { queue, failures }
    }

    /// Queues `record` (its client's executable read now, while the process
    /// lives); never waits.
    pub(crate) fn record(&self, record: Record) {
        let exe = record
            .pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .map(|exe| bounded(&exe.to_string_lossy()));
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send((SystemTime::now(), exe, record))
        {
            self.failures.inc();
        }
    }
}

struct Writer {
    path: PathBuf,
    rotation: Rotation,
    file: Option<(File, u64)>,
    failures: Counter,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Writer {
    fn run(mut self, records: &Receiver<(SystemTime, Option<String>, Record)>) {
        let mut users = Users::default();
        while let Ok((time, exe, record)) = records.recv() {
            let line = line(
                time,
                exe.as_deref(),
                users.name(record.uid).as_deref(),
                &record,
            );
            if let Err(error) = self.write(line.as_bytes()) {
                self.file = None;
                self.failed(&error);
            }
        }
    }

    fn failed(&mut self, error: &io::Error) {
        self.failures.inc();
        if self.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            self.unlogged += 1;
            return;
        }
        self.last_logged = Some(Instant::now());
        tracing::error!(
            path = %self.path.display(),
            %error,
            not_logged = std::mem::take(&mut self.unlogged),
            "cannot write the audit log: records are lost until it can be written"
        );
    }

    /// Opens (or creates, 0600) the file for appending; never through a symlink.
    fn open(&mut self) -> io::Result<()> {
        // No one else may change the file or its directory (where the
        // rotated files are renamed).
        crate::tenants::check_secure_path(&self.path).map_err(io::Error::other)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            // Never through a symlink; never waiting on a FIFO put there.
            .custom_flags(
                i32::try_from((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits())
                    .unwrap_or_default(),
            )
            .open(&self.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        // Root's file is not this user's to write.
        let mine = rustix::process::getuid().as_raw();
        if meta.uid() != mine {
            return Err(io::Error::other(format!(
                "the file belongs to uid {}, not to this user ({mine})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        self.file = Some((file, meta.len()));
        Ok(())
    }

    fn write(&mut self, line: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.open()?;
        }
        let len = line.len() as u64;
        if self
            .file
            .as_ref()
            .is_some_and(|(_, size)| *size > 0 && size + len > self.rotation.max_bytes)
        {
            self.rotate()?;
        }
        let (file, size) = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("not open"))?;
        file.write_all(line)?;
        *size += len;
        Ok(())
    }

    /// `PATH` → `PATH.1` → … → `PATH.keep` (the oldest dropped), then a new `PATH`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let numbered = |n: u32| {
            let mut name = self.path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        if self.rotation.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.rotation.keep).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        self.open()
    }
}

/// The longest executable path recorded, in characters (a client chooses
/// its path; a long one must not fill the log).
const MAX_EXE_CHARS: usize = 256;

/// `exe` cut to [`MAX_EXE_CHARS`] characters, control characters as `?`
/// (each would be six in JSON).
fn bounded(exe: &str) -> String {
    let mut kept: String = exe
        .chars()
        .take(MAX_EXE_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if exe.chars().count() > MAX_EXE_CHARS {
        kept.push('…');
    }
    kept
}

/// The JSON line of one record.
fn line(time: SystemTime, exe: Option<&str>, user: Option<&str>, record: &Record) -> String {
    let mut text = serde_json::json!({
        "time": mlflow_secrets_auth_core::time::rfc3339(time),
        "uid": record.uid,
        "user": user,
        "pid": record.pid,
        "exe": exe,
        "endpoint": record.endpoint,
        "tenant": record.tenant,
        "secret": record.secret,
        "outcome": record.outcome,
        "fingerprint": record.fingerprint,
        "reason": record.reason,
        "suppressed": record.suppressed,
    })
    .to_string();
    text.push('\n');
    text
}

/// User names from `/etc/passwd`, read again when it changes.
#[derive(Default)]
struct Users {
    read_at: Option<SystemTime>,
    names: std::collections::HashMap<u32, String>,
}

impl Users {
    fn name(&mut self, uid: u32) -> Option<String> {
        let changed = std::fs::metadata("/etc/passwd")
            .and_then(|m| m.modified())
            .ok();
        if changed != self.read_at || self.read_at.is_none() {
            self.read_at = changed;
            self.names = std::fs::read_to_string("/etc/passwd")
                .unwrap_or_default()
                .lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let uid = fields.nth(1)?.parse().ok()?;
                    Some((uid, name.to_owned()))
                })
                .rev()
                .collect();
        }
        self.names.get(&uid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: &'static str) -> Record {
        Record {
            uid: 1001,
            pid: Some(std::process::id().cast_signed()),
            endpoint: "/v1/secret",
            tenant: Some("alice".to_owned()),
            secret: Some("secret/mlflow/alice".to_owned()),
            outcome,
            fingerprint: Some("00ff".to_owned()),
            reason: None,
            suppressed: 0,
        }
    }

    #[test]
    fn records_are_appended_private_and_rotated_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let failures = Counter::default();
        let rotation = Rotation {
            max_bytes: 600,
            keep: 2,
        };
        let log = AuditLog::start(path.clone(), rotation, failures.clone());
        for _ in 0..12 {
            log.record(record("served"));
        }
        drop(log);
        // The writer ends when the queue is written and the sender gone.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("audit.jsonl.2").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(failures.get(), 0);
        let mut lines = 0;
        for name in ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"] {
            let file = dir.path().join(name);
            let meta = std::fs::metadata(&file).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o600, "{name}");
            assert!(meta.len() <= rotation.max_bytes, "{name}: {}", meta.len());
            for line in std::fs::read_to_string(&file).unwrap().lines() {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(value["uid"], 1001);
                assert_eq!(value["outcome"], "served");
                assert!(value["exe"].as_str().is_some_and(|e| e.starts_with('/')));
                lines += 1;
            }
        }
        assert!(!dir.path().join("audit.jsonl.3").exists(), "two kept");
        assert!((4..12).contains(&lines), "{lines}: older ones rotated away");
    }

    #[test]
    fn a_fifo_or_another_users_file_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.jsonl");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let failures = Counter::default();
        // Returns at once: a FIFO is not waited on.
        let _log = AuditLog::start(fifo, Rotation::default(), failures.clone());
        assert_eq!(failures.get(), 1);
        if rustix::process::getuid().is_root() {
            let theirs = dir.path().join("theirs.jsonl");
            std::fs::write(&theirs, "").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let failures = Counter::default();
            let log = AuditLog::start(theirs.clone(), Rotation::default(), failures.clone());
            log.record(record("served"));
            drop(log);
            let deadline = Instant::now() + Duration::from_secs(30);
            while failures.get() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(failures.get(), 2, "the open at start and the record");
            assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "");
        }
    }

    #[test]
    fn an_unwritable_log_counts_its_failures_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: nothing can be written.
        let path = dir.path().join("audit.jsonl");
        std::fs::create_dir(&path).unwrap();
        let failures = Counter::default();
        let log = AuditLog::start(path, Rotation::default(), failures.clone());
        for _ in 0..(QUEUE * 2) {
            log.record(record("refused"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while failures.get() < (QUEUE * 2) as u64 + 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            failures.get(),
            (QUEUE * 2) as u64 + 1,
            "the open at start, then every record"
        );
    }
}
