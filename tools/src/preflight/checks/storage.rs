//! Storage checks on the data directory: usable, O_DIRECT-capable, roomy, on a suitable filesystem.
//!
//! When the data directory does not exist yet the server will create it, so the checks probe its
//! parent instead. The probes write one small file and delete it; nothing else is touched.

use std::path::{Path, PathBuf};

use super::{Context, Finding};
use crate::preflight::check::{Fix, Grade, Value, Want};
use crate::preflight::host::{HostView, PathKind};

/// Filesystems the journal is tested on: O_DIRECT, fallocate and fsync behave as the design assumes.
const FILESYSTEMS_RECOMMENDED: [&str; 2] = ["xfs", "ext4"];
/// Filesystems that lose data on reboot, add network round trips, or fake O_DIRECT.
const FILESYSTEMS_UNSUITABLE: [&str; 11] = [
    "tmpfs", "ramfs", "overlay", "nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "fuse",
    "squashfs",
];

/// The directory the probes run in: the data dir, or its parent when the server would create it.
struct ProbeDir {
    path: PathBuf,
    data_dir_exists: bool,
}

fn probe_dir(host: &dyn HostView, data_dir: &Path) -> Result<ProbeDir, String> {
    match host.path_kind(data_dir) {
        PathKind::Directory => Ok(ProbeDir {
            path: data_dir.to_path_buf(),
            data_dir_exists: true,
        }),
        PathKind::NotDirectory => Err(format!(
            "{} exists but is not a directory",
            data_dir.display()
        )),
        PathKind::Missing => match data_dir.parent() {
            Some(parent) if host.path_kind(parent) == PathKind::Directory => Ok(ProbeDir {
                path: parent.to_path_buf(),
                data_dir_exists: false,
            }),
            _ => Err(format!(
                "neither {} nor its parent exists; create it: mkdir -p {0}",
                data_dir.display()
            )),
        },
    }
}

/// Exists (or can be created) and is writable by this user.
pub fn data_dir(host: &dyn HostView, context: &Context) -> Finding {
    let want = Want::Equals(Value::text("writable directory"));
    let shown = context.data_dir.display();
    let dir = match probe_dir(host, &context.data_dir) {
        Ok(dir) => dir,
        Err(reason) => {
            return Finding::new(
                Grade::Below,
                Value::Text(format!("{shown} (unusable)")),
                want.clone(),
                want,
            )
            .detail(reason)
        }
    };
    let state = if dir.data_dir_exists {
        "exists".to_string()
    } else {
        format!("will be created in {}", dir.path.display())
    };
    match host.probe_write(&dir.path) {
        Ok(()) => Finding::new(
            Grade::Recommended,
            Value::Text(format!("{shown} ({state}, writable)")),
            want.clone(),
            want,
        ),
        Err(err) => Finding::new(
            Grade::Below,
            Value::Text(format!("{shown} ({state}, not writable)")),
            want.clone(),
            want,
        )
        .detail(format!(
            "cannot create a file in {}: {err}",
            dir.path.display()
        ))
        .fix(Fix::Manual {
            command: format!("install -d -o SERVICE_USER -m 0750 {shown}"),
        }),
    }
}

/// Journal and SOW files are written with O_DIRECT; some filesystems refuse it with EINVAL.
pub fn o_direct(host: &dyn HostView, context: &Context) -> Finding {
    let want = Want::Equals(Value::text("supported"));
    let dir = match probe_dir(host, &context.data_dir) {
        Ok(dir) => dir,
        Err(_) => {
            return super::unknown(
                "data directory unusable: see storage.data_dir".into(),
                want.clone(),
                want,
            )
        }
    };
    match host.probe_o_direct(&dir.path) {
        Ok(()) => Finding::new(
            Grade::Recommended,
            Value::text("supported"),
            want.clone(),
            want,
        ),
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            let filesystem = mount_of(host, &dir.path)
                .map(|mount| mount.filesystem)
                .unwrap_or_else(|| "this filesystem".into());
            Finding::new(
                Grade::Below,
                Value::text("refused (EINVAL)"),
                want.clone(),
                want,
            )
            .detail(format!(
                "{filesystem} refuses O_DIRECT in {}: put data_dir on a local xfs or ext4 volume",
                dir.path.display()
            ))
        }
        // Without write permission the probe cannot tell; storage.data_dir already fails for that.
        Err(err)
            if err.kind() == std::io::ErrorKind::PermissionDenied
                || err.raw_os_error() == Some(libc::EROFS) =>
        {
            super::unknown(
                format!(
                    "cannot probe O_DIRECT in {}: {err} (see storage.data_dir)",
                    dir.path.display()
                ),
                want.clone(),
                want,
            )
        }
        Err(err) => Finding::new(
            Grade::Below,
            Value::Text(format!("failed: {err}")),
            want.clone(),
            want,
        )
        .detail(format!(
            "an aligned 4096-byte O_DIRECT write in {} failed: {err}",
            dir.path.display()
        )),
    }
}

/// The journal needs its configured size free; twice that leaves room for SOW files and archives.
pub fn free_space(host: &dyn HostView, context: &Context) -> Finding {
    let journal = context.journal_size_bytes();
    let recommended = journal.saturating_mul(2);
    let (want_min, want_rec) = (
        Want::AtLeast(Value::Bytes(journal)),
        Want::AtLeast(Value::Bytes(recommended)),
    );
    let dir = match probe_dir(host, &context.data_dir) {
        Ok(dir) => dir,
        Err(_) => {
            return super::unknown(
                "data directory unusable: see storage.data_dir".into(),
                want_min,
                want_rec,
            )
        }
    };
    match host.statvfs(&dir.path) {
        Err(err) => super::unknown(format!("statvfs({}) failed: {err}", dir.path.display()), want_min, want_rec),
        Ok(space) => Finding::new(super::grade_at_least(space.available_bytes, journal, recommended), Value::Bytes(space.available_bytes), want_min, want_rec)
            .detail(format!(
                "the journal ({}) is preallocated in full; twice that leaves room for SOW files and archived segments",
                Value::Bytes(journal)
            )),
    }
}

/// One line of `/proc/mounts`.
struct Mount {
    device: String,
    point: PathBuf,
    filesystem: String,
}

/// Undoes the octal escapes `/proc/mounts` uses for spaces, tabs, newlines and backslashes.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'\\'
            && index + 3 < bytes.len()
            && bytes[index + 1..index + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let octal = std::str::from_utf8(&bytes[index + 1..index + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).unwrap_or(b'?'));
            index += 4;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path`: the longest mount point that is a whole-component prefix of it.
/// Later lines win ties, as a later mount over the same point hides the earlier one.
fn mount_of(host: &dyn HostView, path: &Path) -> Option<Mount> {
    let canonical = host.canonicalize(path).ok()?;
    let mounts = host.read_file("/proc/mounts").ok()?;
    let mut best: Option<Mount> = None;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, point, filesystem, ..] = fields[..] else {
            continue;
        };
        let point = PathBuf::from(unescape_mount_field(point));
        // Path::starts_with compares whole components: /work does not hold /workspace.
        if canonical.starts_with(&point)
            && best
                .as_ref()
                .is_none_or(|best| point.components().count() >= best.point.components().count())
        {
            best = Some(Mount {
                device: unescape_mount_field(device),
                point,
                filesystem: filesystem.to_string(),
            });
        }
    }
    best
}

/// Why a filesystem from `FILESYSTEMS_UNSUITABLE` is unsuitable.
fn unsuitable_because(family: &str) -> &'static str {
    match family {
        "tmpfs" | "ramfs" => "files live in memory: the journal is lost on reboot",
        "overlay" => "a container's overlay layer: O_DIRECT and fallocate pass through inconsistently; mount a volume instead",
        "squashfs" => "a read-only filesystem",
        _ => "a network or user-space filesystem: every fsync is a round trip and O_DIRECT semantics vary",
    }
}

/// xfs and ext4 are what the storage plane is built for; memory and network filesystems are not.
pub fn filesystem(host: &dyn HostView, context: &Context) -> Finding {
    let (want_min, want_rec) = (
        Want::Equals(Value::text("local disk filesystem")),
        Want::OneOf(FILESYSTEMS_RECOMMENDED.to_vec()),
    );
    let dir = match probe_dir(host, &context.data_dir) {
        Ok(dir) => dir,
        Err(_) => {
            return super::unknown(
                "data directory unusable: see storage.data_dir".into(),
                want_min,
                want_rec,
            )
        }
    };
    let Some(mount) = mount_of(host, &dir.path) else {
        return super::unknown(
            format!("no entry of /proc/mounts holds {}", dir.path.display()),
            want_min,
            want_rec,
        );
    };
    let current = Value::Text(format!(
        "{} on {} ({})",
        mount.filesystem,
        mount.point.display(),
        mount.device
    ));
    let family = mount.filesystem.split('.').next().unwrap_or_default();
    if FILESYSTEMS_RECOMMENDED.contains(&mount.filesystem.as_str()) {
        Finding::new(Grade::Recommended, current, want_min, want_rec)
    } else if FILESYSTEMS_UNSUITABLE.contains(&family) {
        Finding::new(Grade::Below, current, want_min, want_rec).detail(format!(
            "{}: put data_dir on a local xfs or ext4 volume",
            unsuitable_because(family)
        ))
    } else {
        Finding::new(Grade::Minimum, current, want_min, want_rec).detail(format!(
            "{} is not tested with the journal's O_DIRECT + fallocate pattern; xfs or ext4 are",
            mount.filesystem
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::preflight::check::Status;
    use crate::preflight::host::FsSpace;

    #[test]
    fn data_dir_exists_missing_and_unusable() {
        let mut host = healthy_host();
        let result = run("storage.data_dir", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(
            result.current,
            Value::text("/var/lib/tachyon (exists, writable)")
        );

        host.remove(DATA_DIR);
        let result = run("storage.data_dir", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(
            result.current,
            Value::text("/var/lib/tachyon (will be created in /var/lib, writable)")
        );

        host.remove("/var/lib");
        assert_eq!(
            run("storage.data_dir", &host, &plain_context()).status,
            Status::Fail
        );

        host.write(DATA_DIR, "a file, not a directory");
        let result = run("storage.data_dir", &host, &plain_context());
        assert_eq!(result.status, Status::Fail);
        assert!(result.detail.unwrap().contains("not a directory"));

        host.remove(DATA_DIR).mkdir(DATA_DIR);
        host.write_errno = Some(libc::EACCES);
        let result = run("storage.data_dir", &host, &plain_context());
        assert_eq!(result.status, Status::Fail);
        assert!(result.detail.unwrap().contains("Permission denied"));
    }

    #[test]
    fn o_direct_supported_refused_and_failed() {
        let mut host = healthy_host();
        assert_eq!(
            run("storage.o_direct", &host, &plain_context()).status,
            Status::Pass
        );

        host.o_direct_errno = Some(libc::EINVAL);
        let result = run("storage.o_direct", &host, &plain_context());
        assert_eq!(result.status, Status::Fail);
        assert!(
            result.detail.unwrap().starts_with("xfs refuses O_DIRECT"),
            "names the filesystem"
        );

        host.o_direct_errno = Some(libc::EIO);
        assert_eq!(
            run("storage.o_direct", &host, &plain_context()).status,
            Status::Fail
        );

        // Not writable: storage.data_dir fails; this check cannot tell and only warns.
        host.o_direct_errno = Some(libc::EACCES);
        let result = run("storage.o_direct", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert!(result.detail.unwrap().contains("see storage.data_dir"));

        // No usable directory: the data_dir check fails; this one only warns it could not tell.
        host.remove("/var/lib");
        assert_eq!(
            run("storage.o_direct", &host, &plain_context()).status,
            Status::Warn
        );
    }

    #[test]
    fn free_space_against_the_configured_journal() {
        let mut host = healthy_host();
        let context = config_context("[journal]\nsize_bytes = 10737418240\n");
        for (available, expected) in [
            (20u64 << 30, Status::Pass),
            (15 << 30, Status::Warn),
            (5 << 30, Status::Fail),
        ] {
            host.space = Some(FsSpace {
                available_bytes: available,
                total_bytes: 100 << 30,
            });
            let result = run("storage.free_space", &host, &context);
            assert_eq!(result.status, expected, "{available}");
            assert_eq!(result.minimum.to_string(), ">= 10 GiB");
        }
        // Without a config the default journal size applies.
        host.space = Some(FsSpace {
            available_bytes: 1 << 30,
            total_bytes: 100 << 30,
        });
        assert_eq!(
            run("storage.free_space", &host, &plain_context()).status,
            Status::Warn
        );
    }

    #[test]
    fn filesystem_by_longest_mount_prefix() {
        let host = healthy_host();
        let result = run("storage.filesystem", &host, &plain_context());
        assert_eq!(result.status, Status::Pass);
        assert_eq!(
            result.current,
            Value::text("xfs on /var/lib (/dev/nvme0n1)")
        );

        // A sibling with a common string prefix must not match; a deeper tmpfs must.
        host.write(
            "/proc/mounts",
            "/dev/sda1 / ext4 rw 0 0\ntmpfs /var/li tmpfs rw 0 0\n",
        );
        assert_eq!(
            run("storage.filesystem", &host, &plain_context()).current,
            Value::text("ext4 on / (/dev/sda1)")
        );
        host.write(
            "/proc/mounts",
            "/dev/sda1 / ext4 rw 0 0\ntmpfs /var/lib/tachyon tmpfs rw 0 0\n",
        );
        assert_eq!(
            run("storage.filesystem", &host, &plain_context()).status,
            Status::Warn
        );

        host.write("/proc/mounts", "/dev/sda1 / btrfs rw 0 0\n");
        let result = run("storage.filesystem", &host, &plain_context());
        assert_eq!(result.status, Status::Warn);
        assert!(result.detail.unwrap().contains("not tested"));

        host.write("/proc/mounts", "fuse-thing /var fuse.sshfs rw 0 0\n");
        assert!(run("storage.filesystem", &host, &plain_context())
            .detail
            .unwrap()
            .contains("user-space filesystem"));
        host.write("/proc/mounts", "tmpfs / tmpfs rw 0 0\n");
        assert!(run("storage.filesystem", &host, &plain_context())
            .detail
            .unwrap()
            .contains("lost on reboot"));
    }

    #[test]
    fn mount_points_with_escaped_spaces() {
        let host = healthy_host();
        host.mkdir("/mnt/fast disk/data");
        host.write(
            "/proc/mounts",
            "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 /mnt/fast\\040disk xfs rw 0 0\n",
        );
        let context = Context {
            data_dir: PathBuf::from("/mnt/fast disk/data"),
            config: None,
        };
        assert_eq!(
            run("storage.filesystem", &host, &context).current,
            Value::text("xfs on /mnt/fast disk (/dev/sdb1)")
        );
        assert_eq!(unescape_mount_field("a\\011b\\134"), "a\tb\\");
    }
}
