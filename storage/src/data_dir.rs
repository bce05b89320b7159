//! The data directory and its exclusive lock.
//!
//! A second server started on the same directory would interleave journal writes and corrupt
//! them, so the directory is locked with `flock` on a `LOCK` file for the life of the process; the
//! file records the owner's pid for the operator. The lock goes away with the process, even after
//! `kill -9`, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// The data directory cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Creating the directory failed.
    #[error("cannot create data directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Opening or writing the lock file failed.
    #[error("cannot open lock file {path}: {source} (is the data directory writable?)")]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("data directory {path} is in use by another Tachyon process ({holder}); stop it or use another data_dir")]
    InUse {
        /// The directory.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
}

/// A created and exclusively locked data directory. The lock is held until this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates `path` if needed and takes its lock.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        std::fs::create_dir_all(path).map_err(|source| DataDirError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let lock_path = path.join(LOCK_FILE_NAME);
        let lock_error = |source| DataDirError::LockFile {
            path: lock_path.clone(),
            source,
        };
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(lock_error)?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let holder = std::fs::read_to_string(&lock_path)
                .unwrap_or_default()
                .trim()
                .to_string();
            let holder = if holder.is_empty() {
                "unknown pid".to_string()
            } else {
                holder
            };
            return Err(DataDirError::InUse {
                path: path.to_path_buf(),
                holder,
            });
        }
        lock.set_len(0).map_err(lock_error)?;
        writeln!(lock, "pid {}", std::process::id()).map_err(lock_error)?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_until_the_first_is_dropped() {
        let path = std::env::temp_dir().join(format!("tachyon-datadir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let first = DataDir::open(&path.join("nested")).unwrap();
        let second = DataDir::open(&path.join("nested")).unwrap_err();
        assert!(matches!(second, DataDirError::InUse { .. }), "{second}");
        assert!(second
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        drop(first);
        DataDir::open(&path.join("nested")).unwrap();
        std::fs::remove_dir_all(&path).unwrap();
    }
}
