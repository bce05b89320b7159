//! Logs: to stderr always, and to a file with size-based rotation when `[logging] file` (or
//! `--log-file`) is set.
//!
//! The file writer takes a lock per log line. That is fine because nothing logs per message:
//! the data plane logs events (connections, refusals, failures), never traffic. When the file
//! would grow past `max_bytes` it is renamed to `<file>.1` (older ones shift to `.2` … `.keep`,
//! the oldest is removed) and a new file is started; with `compress` the rotated file is
//! gzipped on a background thread so rotation never waits for compression.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tachyon_net::config::LoggingConfig;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// A log file that rotates by size.
pub struct RotatingFile {
    state: Mutex<State>,
}

struct State {
    path: PathBuf,
    file: File,
    written_bytes: u64,
    max_bytes: u64,
    keep: usize,
    compress: bool,
    last_stamp: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Rotated files are named `<file>.<nanoseconds since the epoch, 20 digits>` (then `.gz`):
/// unique names never shift, so a background compression never races a rotation.
fn rotated_name(path: &Path, stamp: u64) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".{stamp:020}"));
    PathBuf::from(name)
}

/// The rotated files of `path`, oldest first.
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let folder = path
        .parent()
        .filter(|f| !f.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(base) = path.file_name().and_then(|name| name.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{base}.");
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| {
                    entry.file_name().to_str().is_some_and(|name| {
                        name.strip_prefix(&prefix).is_some_and(|rest| {
                            let stamp = rest.strip_suffix(".gz").unwrap_or(rest);
                            stamp.len() == 20 && stamp.bytes().all(|byte| byte.is_ascii_digit())
                        })
                    })
                })
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

impl RotatingFile {
    /// Opens (appending to) `path`, rotating once it would exceed `max_bytes`.
    pub fn open(config: &LoggingConfig, path: &Path) -> Result<RotatingFile> {
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create the log folder {}", folder.display()))?;
        }
        let file = open_append(path)
            .with_context(|| format!("cannot open the log file {}", path.display()))?;
        let written_bytes = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        Ok(RotatingFile {
            state: Mutex::new(State {
                path: path.to_path_buf(),
                file,
                written_bytes,
                max_bytes: config.max_bytes,
                keep: config.keep,
                compress: config.compress,
                last_stamp: 0,
            }),
        })
    }

    /// Starts a new file now (the admin API's log rotation action).
    pub fn rotate(&self) -> io::Result<()> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.rotate()
    }

    fn write_line(&self, bytes: &[u8]) -> io::Result<()> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.written_bytes > 0 && state.written_bytes + bytes.len() as u64 > state.max_bytes {
            if let Err(error) = state.rotate() {
                // Keep logging into the current file rather than lose lines.
                let _ = writeln!(io::stderr(), "log rotation failed: {error}");
            }
        }
        state.file.write_all(bytes)?;
        state.written_bytes += bytes.len() as u64;
        Ok(())
    }
}

impl State {
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        self.last_stamp = now.max(self.last_stamp + 1);
        let rotated = rotated_name(&self.path, self.last_stamp);
        std::fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path)?;
        self.written_bytes = 0;
        let files = rotated_files(&self.path);
        for old in files.iter().take(files.len().saturating_sub(self.keep)) {
            let _ = std::fs::remove_file(old);
        }
        if self.compress {
            let mut target = rotated.as_os_str().to_os_string();
            target.push(".gz");
            let target = PathBuf::from(target);
            std::thread::Builder::new()
                .name("tachyon-log-gzip".into())
                .spawn(move || {
                    if let Err(error) = gzip(&rotated, &target) {
                        let _ =
                            writeln!(io::stderr(), "compressing {}: {error}", rotated.display());
                    }
                })?;
        }
        Ok(())
    }
}

fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let mut input = File::open(from)?;
    let mut temporary = to.as_os_str().to_os_string();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut encoder =
        flate2::write::GzEncoder::new(File::create(&temporary)?, flate2::Compression::default());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::rename(&temporary, to)?;
    std::fs::remove_file(from)
}

/// The writer tracing gets for one event; it buffers the event and writes it as one line.
pub struct LineWriter {
    file: Arc<RotatingFile>,
    buffer: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.file.write_line(&self.buffer);
        }
    }
}

/// Hands tracing one [`LineWriter`] per event.
#[derive(Clone)]
pub struct FileMakeWriter(pub Arc<RotatingFile>);

impl<'a> MakeWriter<'a> for FileMakeWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            file: self.0.clone(),
            buffer: Vec::with_capacity(256),
        }
    }
}

/// Installs the global subscriber: stderr (colours on a terminal), plus the rotating file when
/// configured. Returns the file so the caller can rotate it on demand.
pub fn init(filter: &str, config: &LoggingConfig) -> Result<Option<Arc<RotatingFile>>> {
    let parse = || {
        tracing_subscriber::EnvFilter::try_new(filter)
            .with_context(|| format!("bad --log filter '{filter}'"))
    };
    use std::io::IsTerminal;
    let console = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .with_filter(parse()?);
    let file = match &config.file {
        Some(path) => Some(Arc::new(RotatingFile::open(config, path)?)),
        None => None,
    };
    let file_layer = file.as_ref().map(|file| {
        tracing_subscriber::fmt::layer()
            .with_writer(FileMakeWriter(file.clone()))
            .with_ansi(false)
            .with_target(false)
    });
    tracing_subscriber::registry()
        .with(console)
        .with(file_layer.map(|layer| layer.with_filter(parse().expect("parsed above"))))
        .init();
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_bytes: u64, keep: usize, compress: bool) -> LoggingConfig {
        LoggingConfig {
            file: None,
            max_bytes,
            keep,
            compress,
        }
    }

    fn folder(name: &str) -> PathBuf {
        let folder =
            std::env::temp_dir().join(format!("tachyon-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        folder
    }

    #[test]
    fn rotates_by_size_and_keeps_the_configured_number_of_files() {
        let folder = folder("rotate");
        let path = folder.join("tachyon.log");
        let file = RotatingFile::open(&config(100, 2, false), &path).unwrap();
        for line in 0..20 {
            file.write_line(format!("line {line:02} ........................\n").as_bytes())
                .unwrap();
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 100, "{current}");
        assert!(current.ends_with("line 19 ........................\n"));
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "keep = 2: {rotated:?}");
        let newest = std::fs::read_to_string(rotated.last().unwrap()).unwrap();
        assert!(newest.contains("line 16"), "{newest}");
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn rotated_files_are_compressed_in_the_background() {
        let folder = folder("gzip");
        let path = folder.join("tachyon.log");
        let file = RotatingFile::open(&config(1 << 20, 3, true), &path).unwrap();
        file.write_line(b"before rotation\n").unwrap();
        file.rotate().unwrap();
        file.write_line(b"after rotation\n").unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let compressed = loop {
            let done: Vec<PathBuf> = rotated_files(&path)
                .into_iter()
                .filter(|name| name.extension().is_some_and(|ext| ext == "gz"))
                .collect();
            if let Some(first) = done.first() {
                break first.clone();
            }
            assert!(std::time::Instant::now() < deadline, "no .gz appeared");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mut text = String::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(File::open(&compressed).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "before rotation\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after rotation\n");
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
