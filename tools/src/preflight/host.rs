//! The host as the preflight checks see it.
//!
//! Every check reads `/proc`, `/sys`, rlimits, filesystems and kernel features through
//! [`HostView`], never directly, so the tests can run each check against a fake tree (a temp dir
//! laid out like `/proc` and `/sys`, plus fake rlimits and probe results). [`RealHost`] is the only
//! place in the preflight that touches the real machine; its probes create and delete one small
//! file in the data directory and open and close one io_uring instance, and change nothing else.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A resource limit the checks read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// RLIMIT_CORE, in bytes.
    CoreFileSize,
    /// RLIMIT_NOFILE, in file descriptors.
    OpenFiles,
    /// RLIMIT_MEMLOCK, in bytes.
    LockedMemory,
}

/// One side (soft or hard) of a resource limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// A finite limit.
    Finite(u64),
    /// RLIM_INFINITY.
    Unlimited,
}

impl Limit {
    /// Whether this limit allows at least `amount`.
    pub fn allows(self, amount: u64) -> bool {
        match self {
            Limit::Finite(limit) => limit >= amount,
            Limit::Unlimited => true,
        }
    }
}

/// Soft and hard limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The limit in force for a process started now.
    pub soft: Limit,
    /// The ceiling the process may raise its soft limit to.
    pub hard: Limit,
}

/// Space on the filesystem holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged process may still write (f_bavail · f_frsize).
    pub available_bytes: u64,
    /// Size of the filesystem (f_blocks · f_frsize).
    pub total_bytes: u64,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing at that path.
    Missing,
    /// A directory (after following symlinks).
    Directory,
    /// Something that is not a directory.
    NotDirectory,
}

/// Read-only view of a host, plus the few harmless probes the checks need.
pub trait HostView {
    /// Reads a whole file of the host's pseudo filesystems, named by its absolute path (`/proc/mounts`).
    fn read_file(&self, path: &str) -> io::Result<String>;
    /// Lists the entry names of a directory, sorted, named by its absolute path.
    fn list_dir(&self, path: &str) -> io::Result<Vec<String>>;
    /// The soft and hard limit of `resource` for this process's user.
    fn rlimit(&self, resource: Resource) -> io::Result<Rlimit>;
    /// What `path` names (following symlinks).
    fn path_kind(&self, path: &Path) -> PathKind;
    /// The absolute path with symlinks resolved, as the mount table names it.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// Free and total space of the filesystem holding `path`.
    fn statvfs(&self, path: &Path) -> io::Result<FsSpace>;
    /// Creates and removes a small file in `dir`, to prove the directory is writable.
    fn probe_write(&self, dir: &Path) -> io::Result<()>;
    /// Creates a file in `dir` with O_DIRECT, writes one aligned 4096-byte block, removes it.
    fn probe_o_direct(&self, dir: &Path) -> io::Result<()>;
    /// Sets up (and closes) a small io_uring instance; the error is the kernel's errno.
    fn probe_io_uring(&self) -> io::Result<()>;
}

/// The real machine: reads files under `/`, asks the kernel for limits and probes.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

/// Size and alignment of the O_DIRECT probe block: the logical block size of nearly every device.
const DIRECT_IO_BLOCK_BYTES: usize = 4096;

/// A 4096-byte block aligned for O_DIRECT without any unsafe allocation.
#[repr(C, align(4096))]
struct AlignedBlock([u8; DIRECT_IO_BLOCK_BYTES]);

/// `struct io_uring_params` from `<linux/io_uring.h>`: 120 bytes of u32 fields. The probe passes
/// it zeroed (no flags), so naming the fields buys nothing.
#[repr(C)]
struct IoUringParams {
    words: [u32; 30],
}

/// Entries in the probe ring: as small as the kernel accepts, so the probe pins almost no memory.
const PROBE_RING_ENTRIES: u32 = 4;

impl RealHost {
    /// A file name no other process will pick, so probes never touch an operator's file.
    fn probe_path(dir: &Path, tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        dir.join(format!(
            ".tachyon-preflight-{tag}-{}-{nanos}",
            std::process::id()
        ))
    }
}

impl HostView for RealHost {
    fn read_file(&self, path: &str) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
        list_sorted(Path::new(path))
    }

    fn rlimit(&self, resource: Resource) -> io::Result<Rlimit> {
        let which = match resource {
            Resource::CoreFileSize => libc::RLIMIT_CORE,
            Resource::OpenFiles => libc::RLIMIT_NOFILE,
            Resource::LockedMemory => libc::RLIMIT_MEMLOCK,
        };
        let mut raw = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one `struct rlimit` through the pointer, which points to a
        // live, properly typed local.
        let rc = unsafe { libc::getrlimit(which, &mut raw) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let limit = |value: libc::rlim_t| {
            if value == libc::RLIM_INFINITY {
                Limit::Unlimited
            } else {
                Limit::Finite(value)
            }
        };
        Ok(Rlimit {
            soft: limit(raw.rlim_cur),
            hard: limit(raw.rlim_max),
        })
    }

    fn path_kind(&self, path: &Path) -> PathKind {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => PathKind::Directory,
            Ok(_) => PathKind::NotDirectory,
            Err(_) => PathKind::Missing,
        }
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn statvfs(&self, path: &Path) -> io::Result<FsSpace> {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        // SAFETY: an all-zero `struct statvfs` is a valid value (plain integers).
        let mut raw: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c_path` is a NUL-terminated string that outlives the call; `raw` is a live
        // `struct statvfs` the kernel fills in.
        let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut raw) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let fragment = raw.f_frsize as u64;
        Ok(FsSpace {
            available_bytes: (raw.f_bavail as u64).saturating_mul(fragment),
            total_bytes: (raw.f_blocks as u64).saturating_mul(fragment),
        })
    }

    fn probe_write(&self, dir: &Path) -> io::Result<()> {
        let path = Self::probe_path(dir, "write");
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut file| file.write_all(b"tachyon preflight\n"));
        // Remove even after a failed write: the probe must leave nothing behind.
        let _ = std::fs::remove_file(&path);
        result
    }

    fn probe_o_direct(&self, dir: &Path) -> io::Result<()> {
        let path = Self::probe_path(dir, "direct");
        let block = Box::new(AlignedBlock([0xA5; DIRECT_IO_BLOCK_BYTES]));
        let result = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .and_then(|mut file| {
                // One write of the whole block: a retry after a short write would be misaligned.
                let written = file.write(&block.0)?;
                if written == DIRECT_IO_BLOCK_BYTES {
                    Ok(())
                } else {
                    Err(io::Error::other(format!(
                        "short O_DIRECT write: {written} of {DIRECT_IO_BLOCK_BYTES} bytes"
                    )))
                }
            });
        let _ = std::fs::remove_file(&path);
        result
    }

    fn probe_io_uring(&self) -> io::Result<()> {
        let mut params = IoUringParams { words: [0; 30] };
        // SAFETY: io_uring_setup(2) reads and writes exactly one `struct io_uring_params`
        // (120 bytes, u32 fields) through the pointer, which points to a live, zeroed,
        // 4-byte-aligned 120-byte struct; the entry count is a plain integer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_io_uring_setup,
                PROBE_RING_ENTRIES as libc::c_long,
                &mut params as *mut IoUringParams,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
        unsafe { libc::close(fd as libc::c_int) };
        Ok(())
    }
}

/// Directory entry names, sorted so every check (and its output) runs in a stable order.
fn list_sorted(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
pub(crate) use fake::FakeHost;

#[cfg(test)]
mod fake {
    //! A host made of a temp dir laid out like `/`, plus canned rlimits and probe results.

    use super::*;
    use std::collections::HashMap;

    /// Fake host for tests; the temp dir is removed on drop.
    pub(crate) struct FakeHost {
        pub root: PathBuf,
        pub rlimits: HashMap<Resource, Rlimit>,
        pub space: Option<FsSpace>,
        /// errno returned by the write probe, `None` for success.
        pub write_errno: Option<i32>,
        /// errno returned by the O_DIRECT probe, `None` for success.
        pub o_direct_errno: Option<i32>,
        /// errno returned by io_uring_setup, `None` for success.
        pub io_uring_errno: Option<i32>,
    }

    impl FakeHost {
        /// An empty tree: every file is missing, every probe succeeds.
        pub fn empty() -> FakeHost {
            use std::sync::atomic::{AtomicU64, Ordering};
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let root = std::env::temp_dir().join(format!(
                "tachyon-fakehost-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).expect("create fake host root");
            FakeHost {
                root,
                rlimits: HashMap::new(),
                space: None,
                write_errno: None,
                o_direct_errno: None,
                io_uring_errno: None,
            }
        }

        /// Maps an absolute host path into the temp tree.
        pub fn under_root(&self, path: &Path) -> PathBuf {
            self.root.join(path.strip_prefix("/").unwrap_or(path))
        }

        /// Writes `contents` to the host path `path`, creating parent folders.
        pub fn write(&self, path: &str, contents: &str) -> &Self {
            let full = self.under_root(Path::new(path));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, contents).unwrap();
            self
        }

        /// Creates the host directory `path`.
        pub fn mkdir(&self, path: &str) -> &Self {
            std::fs::create_dir_all(self.under_root(Path::new(path))).unwrap();
            self
        }

        /// Removes the host file or directory `path`.
        pub fn remove(&self, path: &str) -> &Self {
            let full = self.under_root(Path::new(path));
            if full.is_dir() {
                std::fs::remove_dir_all(full).unwrap();
            } else {
                let _ = std::fs::remove_file(full);
            }
            self
        }

        /// Makes host path `link` a symlink to host path `target`.
        pub fn symlink(&self, target: &str, link: &str) -> &Self {
            let link = self.under_root(Path::new(link));
            std::fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(self.under_root(Path::new(target)), link).unwrap();
            self
        }

        /// Sets the soft and hard limit of `resource`.
        pub fn set_rlimit(&mut self, resource: Resource, soft: Limit, hard: Limit) -> &mut Self {
            self.rlimits.insert(resource, Rlimit { soft, hard });
            self
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn errno(code: Option<i32>) -> io::Result<()> {
        match code {
            None => Ok(()),
            Some(code) => Err(io::Error::from_raw_os_error(code)),
        }
    }

    impl HostView for FakeHost {
        fn read_file(&self, path: &str) -> io::Result<String> {
            std::fs::read_to_string(self.under_root(Path::new(path)))
        }

        fn list_dir(&self, path: &str) -> io::Result<Vec<String>> {
            list_sorted(&self.under_root(Path::new(path)))
        }

        fn rlimit(&self, resource: Resource) -> io::Result<Rlimit> {
            self.rlimits
                .get(&resource)
                .copied()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
        }

        fn path_kind(&self, path: &Path) -> PathKind {
            RealHost.path_kind(&self.under_root(path))
        }

        fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
            let real = std::fs::canonicalize(self.under_root(path))?;
            let root = std::fs::canonicalize(&self.root)?;
            let inside = real
                .strip_prefix(&root)
                .map_err(|_| io::Error::other("path escapes the fake root"))?;
            Ok(Path::new("/").join(inside))
        }

        fn statvfs(&self, _path: &Path) -> io::Result<FsSpace> {
            self.space
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSYS))
        }

        fn probe_write(&self, _dir: &Path) -> io::Result<()> {
            errno(self.write_errno)
        }

        fn probe_o_direct(&self, _dir: &Path) -> io::Result<()> {
            errno(self.o_direct_errno)
        }

        fn probe_io_uring(&self) -> io::Result<()> {
            errno(self.io_uring_errno)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // These run against the machine the tests run on; they assert only what holds on any Linux.

    #[test]
    fn real_rlimits_are_readable_and_soft_never_exceeds_hard() {
        for resource in [
            Resource::CoreFileSize,
            Resource::OpenFiles,
            Resource::LockedMemory,
        ] {
            let limit = RealHost.rlimit(resource).unwrap();
            if let Limit::Finite(soft) = limit.soft {
                assert!(limit.hard.allows(soft), "{resource:?}: {limit:?}");
            }
        }
    }

    #[test]
    fn real_probes_leave_no_file_behind() {
        let dir = std::env::temp_dir().join(format!("tachyon-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        RealHost.probe_write(&dir).unwrap();
        // O_DIRECT may legitimately be refused by the test machine's temp filesystem.
        let _ = RealHost.probe_o_direct(&dir);
        assert_eq!(list_sorted(&dir).unwrap(), Vec::<String>::new());
        let space = RealHost.statvfs(&dir).unwrap();
        assert!(space.available_bytes <= space.total_bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_probe_fails_in_a_missing_directory() {
        let err = RealHost
            .probe_write(Path::new("/nonexistent-tachyon-dir/x"))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn limit_allows() {
        assert!(Limit::Unlimited.allows(u64::MAX));
        assert!(Limit::Finite(10).allows(10));
        assert!(!Limit::Finite(9).allows(10));
    }
}
