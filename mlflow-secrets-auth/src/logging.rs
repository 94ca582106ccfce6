//! Logging: a `tracing` subscriber for the level of `MLFLOW_SECRETS_LOG_LEVEL`
//! whose every line passes through [`mlflow_secrets_auth_core::redact`]. Library code never
//! installs a subscriber by itself; applications call [`init_logging`].

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogLevel;

/// A writer that redacts credentials from what it writes, line by line.
#[derive(Debug)]
pub struct RedactingWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: Write> RedactingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }

    fn flush_lines(&mut self, all: bool) -> io::Result<()> {
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            self.inner
                .write_all(mlflow_secrets_auth_core::redact(&text).as_bytes())?;
        }
        if all && !self.pending.is_empty() {
            let text = String::from_utf8_lossy(&self.pending).into_owned();
            self.pending.clear();
            self.inner
                .write_all(mlflow_secrets_auth_core::redact(&text).as_bytes())?;
        }
        Ok(())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        self.flush_lines(false)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_lines(true)?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush_lines(true);
    }
}

/// Makes a [`RedactingWriter`] around what `M` makes.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.0.make_writer())
    }
}

/// Crates whose events are shown at the chosen level; all others (HTTP and
/// SDK internals, which may trace raw traffic) only from `WARN` up.
const OUR_CRATES: [&str; 7] = [
    "mlflow_secrets_auth",
    "mlflow_secrets_auth_core",
    "mlflow_secrets_auth_cache",
    "mlflow_secrets_auth_retry",
    "mlflow_secrets_auth_vault",
    "mlflow_secrets_auth_aws",
    "mlflow_secrets_auth_azure",
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// A subscriber writing redacted lines to what `writer` makes: this
/// workspace's events at `level`, other crates' from `WARN` up.
pub fn subscriber<M>(level: LogLevel, writer: M) -> impl tracing::Subscriber + Send + Sync
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    subscriber_as(level, LogFormat::Text, writer)
}

/// [`subscriber`] in the given format; every line (JSON too) is redacted.
pub fn subscriber_as<M>(
    level: LogLevel,
    format: LogFormat,
    writer: M,
) -> impl tracing::Subscriber + Send + Sync
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::{Layer as _, filter::Targets};
    let targets = OUR_CRATES
        .iter()
        .fold(Targets::new(), |targets, name| {
            targets.with_target(*name, level.as_tracing())
        })
        .with_default(tracing::Level::WARN);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(Redacting(writer))
        .with_ansi(false);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry().with(layer.with_filter(targets))
}

/// Installs a global subscriber writing redacted lines to stderr at `level`.
/// Fails when the process already has one.
pub fn init_logging(level: LogLevel) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    init_logging_as(level, LogFormat::Text)
}

/// [`init_logging`] in the given format.
pub fn init_logging_as(
    level: LogLevel,
    format: LogFormat,
) -> Result<(), tracing::subscriber::SetGlobalDefaultError> {
    tracing::subscriber::set_global_default(subscriber_as(level, format, io::stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redacted_even_when_split_across_writes() {
        let mut out = Vec::new();
        {
            let mut writer = RedactingWriter::new(&mut out);
            writer.write_all(b"Authorization: Bea").unwrap();
            writer
                .write_all(b"rer tok-secret-123\nnext line\n")
                .unwrap();
            writer.write_all(b"tail password=hunter2").unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "Authorization: Bearer ***\nnext line\ntail password=***"
        );
    }
}
