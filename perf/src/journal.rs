//! `tachyon-bench journal`: what the transaction log costs on this machine, measured in one run in
//! one directory so the figures can be compared with each other.
//!
//! 1. CRC32C throughput over a 64 MiB buffer (the CPU cost every record pays twice: when written
//!    and when recovered).
//! 2. Journal write throughput: 1 KiB records appended as fast as the append buffer takes them,
//!    each write+fdatasync group as large as the buffer allows. Twice: with enough spare segments
//!    zero-filled before the clock starts (the write path alone, what a burst gets), and with the
//!    default spares refilled while writing (sustained load, where each segment is written twice:
//!    zeros, then records).
//! 3. The disk's own sequential O_DIRECT bandwidth with `fio`, in the same directory, with the
//!    journal's group size and one fdatasync per write, so the ratio journal/fio says how much of
//!    the disk the journal uses (the goal is at least 90 %).
//! 4. Recovery scan speed: the time `Journal::open` takes to verify every record's CRC.
//!
//! Figures are printed (and written as JSON with `--json`), never asserted: the machine is shared.
//! This module only uses the storage library; it never changes it.

use std::fs;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use tachyon_storage::journal::{
    crc32c_implementation, encoded_len, Journal, JournalConfig, JournalError, Publisher, Record,
    RecordKind, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};

use crate::report::Environment;

/// Bytes of the buffer the CRC32C throughput is measured over.
const CRC_BUFFER_BYTES: usize = 64 << 20;
/// Least time spent checksumming (the buffer is checksummed again until it has passed).
const CRC_DURATION: Duration = Duration::from_millis(500);
const CRC_DURATION_SMOKE: Duration = Duration::from_millis(100);
/// Encoded size of every record appended (header, topic and payload).
const RECORD_BYTES: usize = 1024;
const RECORD_TOPIC: &[u8] = b"bench/journal";
/// How long records are appended.
const WRITE_DURATION: Duration = Duration::from_secs(2);
const WRITE_DURATION_SMOKE: Duration = Duration::from_millis(300);
/// The file fio writes (and then overwrites, so that it writes into allocated blocks as the
/// journal does into its zero-filled segments).
const FIO_SIZE: &str = "256M";
/// Disk bandwidth assumed to size the spare segments when fio could not measure it.
const ASSUMED_DISK_BYTES_PER_SECOND: f64 = 2e9;
/// Spare segments cover this multiple of the bytes the disk could take in the write phase.
const SPARE_HEADROOM: f64 = 1.25;
/// Upper bound on spare segments (4 GiB with the default 64 MiB segments).
const SPARE_SEGMENTS_MAX: usize = 64;
/// Spares never take more than this share of the free space in the directory.
const SPARE_FREE_SPACE_SHARE: f64 = 0.5;
/// How long the spares may take to be zero-filled before the write phase.
const SPARE_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one write+sync may take before the run is called stuck.
const COMPLETION_TIMEOUT_MS: i32 = 30_000;
/// The journal's throughput should reach this share of fio's (reported, not asserted).
const RATIO_GOAL: f64 = 0.9;

/// Flags of `tachyon-bench journal`.
#[derive(Args, Debug)]
pub struct JournalArgs {
    /// Directory to measure in (a fresh subdirectory is created and removed) [default: ./target].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// How long records are appended [default: 2s; smoke: 300ms].
    #[arg(long, value_parser = crate::parse_duration)]
    pub duration: Option<Duration>,
    /// Short run for CI (under ten seconds in all).
    #[arg(long)]
    pub smoke: bool,
    /// Write the results (with the environment) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the measurement directory instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// CRC32C throughput.
#[derive(Clone, Debug, Serialize)]
pub struct CrcResult {
    /// What `crc32c_implementation()` reports (sse4.2, aarch64-crc or software).
    pub implementation: &'static str,
    /// Bytes of the buffer.
    pub buffer_bytes: usize,
    /// Bytes checksummed in all.
    pub bytes: u64,
    /// Seconds taken.
    pub seconds: f64,
    /// Throughput in 10⁹ bytes per second.
    pub gb_per_s: f64,
}

/// Journal write throughput.
#[derive(Clone, Debug, Serialize)]
pub struct WriteResult {
    /// The I/O path the journal used.
    pub backend: String,
    /// How the spare segments were made.
    pub spares: Spares,
    /// Encoded bytes of each record.
    pub record_bytes: usize,
    /// Records durable at the end.
    pub records: u64,
    /// Their bytes.
    pub bytes_durable: u64,
    /// Seconds from the first append until the last record was durable.
    pub seconds: f64,
    /// Throughput in 10⁶ bytes per second.
    pub mb_per_s: f64,
    /// Write+fdatasync groups completed.
    pub groups: u64,
    /// Average record bytes per group.
    pub group_bytes_average: f64,
    /// Spare segments ready when the clock started.
    pub spare_segments: usize,
    /// Spares still ready at the end (with `ReadyAhead`, 0 means the write path may have had to
    /// zero-fill one itself, which lowers the figure).
    pub spare_segments_left: usize,
}

/// The disk's own bandwidth as fio measured it.
#[derive(Clone, Debug, Serialize)]
pub struct FioResult {
    /// The command line run.
    pub command: String,
    /// Write bandwidth in 10⁶ bytes per second, if fio ran.
    pub mb_per_s: Option<f64>,
    /// Why there is no figure (fio missing or failed).
    pub error: Option<String>,
}

/// Recovery scan speed.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryResult {
    /// Records recovered.
    pub records: u64,
    /// Their bytes (every one CRC-checked).
    pub bytes: u64,
    /// Segments recovered.
    pub segments: usize,
    /// Wall time of `Journal::open`.
    pub seconds: f64,
    /// The scan and repair alone, as the recovery report gives it.
    pub scan_seconds: f64,
    /// Throughput over the open's wall time in 10⁹ bytes per second.
    pub gb_per_s: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct JournalReport {
    /// Always "tachyon-bench journal".
    pub tool: &'static str,
    /// The command line.
    pub command_line: Vec<String>,
    /// Kernel, CPU, commit.
    pub environment: Environment,
    /// The directory measured in.
    pub dir: PathBuf,
    /// Whether this was a --smoke run.
    pub smoke: bool,
    /// CRC32C throughput.
    pub crc32c: CrcResult,
    /// Journal write throughput with spares made ahead (the write path alone).
    pub journal_write: WriteResult,
    /// Journal write throughput while the preallocator refills spares (sustained load).
    pub journal_write_refilling: WriteResult,
    /// The disk's bandwidth.
    pub fio: FioResult,
    /// journal_write.mb_per_s / fio.mb_per_s.
    pub journal_to_fio_ratio: Option<f64>,
    /// journal_write_refilling.mb_per_s / fio.mb_per_s.
    pub journal_refilling_to_fio_ratio: Option<f64>,
    /// The ratio the journal should reach.
    pub journal_to_fio_ratio_goal: f64,
    /// Recovery scan speed.
    pub recovery: RecoveryResult,
}

/// Runs the measurements in a fresh subdirectory of `--dir` and prints them.
pub fn run(arguments: &JournalArgs) -> Result<()> {
    let parent = arguments
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = parent.join(format!("tachyon-bench-journal-{}", std::process::id()));
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let outcome = measure_all(arguments, &dir);
    if !arguments.keep {
        let _ = fs::remove_dir_all(&dir);
    }
    let report = outcome?;
    print!("{}", table(&report));
    if let Some(path) = &arguments.json {
        let text = serde_json::to_string_pretty(&report)?;
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn measure_all(arguments: &JournalArgs, dir: &Path) -> Result<JournalReport> {
    let environment = Environment::collect();
    println!("{}", environment.summary());
    println!("measuring in {}", dir.display());
    let smoke = arguments.smoke;
    let write_duration = arguments.duration.unwrap_or(if smoke {
        WRITE_DURATION_SMOKE
    } else {
        WRITE_DURATION
    });

    eprintln!("crc32c over {} MiB ...", CRC_BUFFER_BYTES >> 20);
    let crc32c = measure_crc(
        CRC_BUFFER_BYTES,
        if smoke {
            CRC_DURATION_SMOKE
        } else {
            CRC_DURATION
        },
    );

    // fio first: its bandwidth sizes the spare segments the journal needs for the write phase.
    let config = JournalConfig::default();
    // A group holds up to max_buffered_bytes of records: that is the journal's write size.
    let fio_block_bytes = config.max_buffered_bytes;
    eprintln!("fio sequential O_DIRECT writes ...");
    let fio = measure_fio(dir, fio_block_bytes, write_duration);

    let disk_bytes_per_second = fio
        .mb_per_s
        .map_or(ASSUMED_DISK_BYTES_PER_SECOND, |mb| mb * 1e6);
    let spare_segments = spares_needed(
        dir,
        &config,
        disk_bytes_per_second * write_duration.as_secs_f64(),
    );
    eprintln!(
        "journal writes of {RECORD_BYTES}-byte records for {write_duration:?}, {spare_segments} spare segments made ahead ..."
    );
    let alone_dir = dir.join("spares-ready");
    let journal_write = measure_write(
        &alone_dir,
        &config,
        Spares::ReadyAhead {
            count: spare_segments,
        },
        write_duration,
    )?;

    eprintln!("recovery scan ...");
    let recovery = measure_recovery(&alone_dir, &config)?;
    if !arguments.keep {
        let _ = fs::remove_dir_all(&alone_dir);
    }

    eprintln!(
        "journal writes for {write_duration:?} while the preallocator refills {} spares ...",
        config.spare_segments
    );
    let refilling_dir = dir.join("spares-refilled");
    let journal_write_refilling =
        measure_write(&refilling_dir, &config, Spares::Refilled, write_duration)?;
    if !arguments.keep {
        let _ = fs::remove_dir_all(&refilling_dir);
    }

    let journal_to_fio_ratio = fio.mb_per_s.map(|fio| journal_write.mb_per_s / fio);
    let journal_refilling_to_fio_ratio = fio
        .mb_per_s
        .map(|fio| journal_write_refilling.mb_per_s / fio);
    Ok(JournalReport {
        tool: "tachyon-bench journal",
        command_line: std::env::args().collect(),
        environment,
        dir: dir.to_path_buf(),
        smoke,
        crc32c,
        journal_write,
        journal_write_refilling,
        fio,
        journal_to_fio_ratio,
        journal_refilling_to_fio_ratio,
        journal_to_fio_ratio_goal: RATIO_GOAL,
        recovery,
    })
}

/// Checksums a `buffer_bytes` buffer of pseudo-random bytes repeatedly for at least `duration`.
pub fn measure_crc(buffer_bytes: usize, duration: Duration) -> CrcResult {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let buffer: Vec<u8> = (0..buffer_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // One pass untimed, so the buffer is in memory and the implementation is chosen.
    std::hint::black_box(crc32c::crc32c(&buffer));
    let started = Instant::now();
    let mut passes = 0u64;
    let mut crc = 0u32;
    while passes < 3 || started.elapsed() < duration {
        crc = crc32c::crc32c_append(crc, std::hint::black_box(&buffer));
        passes += 1;
    }
    std::hint::black_box(crc);
    let seconds = started.elapsed().as_secs_f64();
    let bytes = passes * buffer_bytes as u64;
    CrcResult {
        implementation: crc32c_implementation(),
        buffer_bytes,
        bytes,
        seconds,
        gb_per_s: bytes as f64 / seconds / 1e9,
    }
}

/// Spare segments enough for `expected_bytes` of records, within the caps.
fn spares_needed(dir: &Path, config: &JournalConfig, expected_bytes: f64) -> usize {
    let segment_data_bytes = (config.segment_size_bytes - SEGMENT_HEADER_BYTES as u64) as f64;
    let wanted = (expected_bytes * SPARE_HEADROOM / segment_data_bytes).ceil() as usize + 1;
    let affordable = free_bytes(dir).map_or(SPARE_SEGMENTS_MAX, |free| {
        (free as f64 * SPARE_FREE_SPACE_SHARE / config.segment_size_bytes as f64) as usize
    });
    wanted.clamp(2, SPARE_SEGMENTS_MAX).min(affordable).max(1)
}

/// Bytes an unprivileged user may still write in the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` a writable statvfs, both live for
    // the call; the struct is read only if the call succeeded (it then filled it).
    let stats = unsafe {
        if libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) != 0 {
            return None;
        }
        stats.assume_init()
    };
    Some(stats.f_bavail as u64 * stats.f_frsize as u64)
}

fn bench_record(payload: &[u8]) -> Record<'_> {
    Record {
        kind: RecordKind::Publish,
        timestamp_ns: 1,
        topic: RECORD_TOPIC,
        publisher: Publisher {
            client_name_hash: 1,
            client_sequence: 1,
        },
        headers: b"",
        payload,
    }
}

/// Blocks until `fd` is readable (a journal completion may be ready).
fn wait_readable(fd: RawFd) -> Result<()> {
    let mut descriptor = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one live pollfd, count 1.
        let ready = unsafe { libc::poll(&mut descriptor, 1, COMPLETION_TIMEOUT_MS) };
        match ready {
            1.. => return Ok(()),
            0 => bail!("no journal completion within {COMPLETION_TIMEOUT_MS} ms"),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return Err(std::io::Error::last_os_error()).context("poll on the completion fd"),
        }
    }
}

/// Which preallocation the write phase runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Spares {
    /// `count` spares zero-filled before the clock starts and none refilled while it runs: the
    /// write path alone (what a burst gets).
    ReadyAhead {
        /// Spare segments made beforehand.
        count: usize,
    },
    /// The configured spares, refilled by the preallocator while records are written: each
    /// segment is written twice, as zeros and then with records (sustained load).
    Refilled,
}

/// Appends records for `duration` keeping the append buffer full, then waits until all are
/// durable; the journal is left closed in `dir` for the recovery measurement.
pub fn measure_write(
    dir: &Path,
    config: &JournalConfig,
    spares: Spares,
    duration: Duration,
) -> Result<WriteResult> {
    let payload = vec![0xa5u8; RECORD_BYTES - RECORD_HEADER_BYTES - RECORD_TOPIC.len()];
    let record = bench_record(&payload);
    assert_eq!(encoded_len(&record), RECORD_BYTES);
    let (config, spare_segments) = match spares {
        Spares::ReadyAhead { count } => {
            // A journal opened with one spare wanted adopts every spare already in the directory
            // and refills only once all are used, so none is zero-filled while the clock runs.
            let preparing = Journal::open(
                dir,
                JournalConfig {
                    spare_segments: count,
                    ..config.clone()
                },
            )
            .context("opening the journal to preallocate spares")?;
            wait_for_spares(&preparing, count)?;
            drop(preparing);
            (
                JournalConfig {
                    spare_segments: 1,
                    ..config.clone()
                },
                count,
            )
        }
        Spares::Refilled => (config.clone(), config.spare_segments),
    };
    let mut journal = Journal::open(dir, config).context("opening the journal")?;
    let backend = journal.backend_kind().to_string();
    wait_for_spares(&journal, spare_segments)?;
    let started = Instant::now();
    let append_until = started + duration;
    let mut appending = true;
    let mut groups = 0u64;
    loop {
        if appending {
            loop {
                match journal.append(&record) {
                    Ok(_) => {}
                    Err(JournalError::Backpressure { .. }) => break,
                    Err(error) => return Err(error).context("appending"),
                }
            }
            appending = Instant::now() < append_until;
        }
        journal.submit().context("submitting")?;
        if !appending && journal.durable_up_to() == journal.last_sequence() {
            break;
        }
        wait_readable(journal.completion_fd())?;
        while journal.poll_completions().context("polling")?.is_some() {
            groups += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = journal.durable_up_to();
    let bytes_durable = records * RECORD_BYTES as u64;
    let spare_segments_left = journal.spare_segments_ready();
    drop(journal);
    Ok(WriteResult {
        backend,
        spares,
        record_bytes: RECORD_BYTES,
        records,
        bytes_durable,
        seconds,
        mb_per_s: bytes_durable as f64 / seconds / 1e6,
        groups,
        group_bytes_average: bytes_durable as f64 / groups.max(1) as f64,
        spare_segments,
        spare_segments_left,
    })
}

/// Waits until `journal` has `count` spare segments ready.
fn wait_for_spares(journal: &Journal, count: usize) -> Result<()> {
    let deadline = Instant::now() + SPARE_READY_TIMEOUT;
    while journal.spare_segments_ready() < count {
        if let Some(error) = journal.preallocation_error() {
            bail!("cannot preallocate spare segments: {error}");
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} spare segments ready after {SPARE_READY_TIMEOUT:?}",
                journal.spare_segments_ready(),
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Times `Journal::open` over the journal in `dir` (recovery reads and CRC-checks every record).
pub fn measure_recovery(dir: &Path, config: &JournalConfig) -> Result<RecoveryResult> {
    let started = Instant::now();
    let journal = Journal::open(dir, config.clone()).context("reopening the journal")?;
    let seconds = started.elapsed().as_secs_f64();
    let report = journal.recovery_report().clone();
    drop(journal);
    Ok(RecoveryResult {
        records: report.records,
        bytes: report.record_bytes,
        segments: report.segments,
        seconds,
        scan_seconds: report.duration.as_secs_f64(),
        gb_per_s: report.record_bytes as f64 / seconds / 1e9,
    })
}

/// The fio command that matches the journal's writes: `block_bytes` O_DIRECT writes through
/// io_uring, each followed by an fdatasync, one at a time, overwriting a laid-out file.
fn fio_arguments(file: &Path, block_bytes: usize, duration: Duration) -> Vec<String> {
    vec![
        "--name=seq".to_owned(),
        format!("--filename={}", file.display()),
        "--rw=write".to_owned(),
        "--direct=1".to_owned(),
        format!("--bs={block_bytes}"),
        format!("--size={FIO_SIZE}"),
        "--ioengine=io_uring".to_owned(),
        "--iodepth=1".to_owned(),
        "--fdatasync=1".to_owned(),
        // Lay the file out first, so the timed writes go to allocated blocks as the journal's do.
        "--overwrite=1".to_owned(),
        "--time_based".to_owned(),
        format!("--runtime={}ms", duration.as_millis().max(1)),
        "--output-format=json".to_owned(),
    ]
}

/// Runs fio in `dir`; a missing or failing fio gives a result without a figure.
pub fn measure_fio(dir: &Path, block_bytes: usize, duration: Duration) -> FioResult {
    let file = dir.join("fio-seq.dat");
    let arguments = fio_arguments(&file, block_bytes, duration);
    let command = format!("fio {}", arguments.join(" "));
    let failed = |error: String| FioResult {
        command: command.clone(),
        mb_per_s: None,
        error: Some(error),
    };
    let output = match Command::new("fio").args(&arguments).output() {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!("fio not installed");
            return failed("fio not installed (apt-get install fio)".to_owned());
        }
        Err(error) => return failed(format!("cannot run fio: {error}")),
    };
    let _ = fs::remove_file(&file);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return failed(format!("fio failed ({}): {}", output.status, stderr.trim()));
    }
    match parse_fio_write_bytes_per_second(&output.stdout) {
        Some(bytes_per_second) => FioResult {
            command,
            mb_per_s: Some(bytes_per_second / 1e6),
            error: None,
        },
        None => failed("fio printed no write bandwidth".to_owned()),
    }
}

/// `jobs[0].write.bw_bytes` of fio's JSON output (fio may print warnings before the JSON).
fn parse_fio_write_bytes_per_second(stdout: &[u8]) -> Option<f64> {
    let text = String::from_utf8_lossy(stdout);
    let json: serde_json::Value = serde_json::from_str(&text[text.find('{')?..]).ok()?;
    let bandwidth = json
        .get("jobs")?
        .get(0)?
        .get("write")?
        .get("bw_bytes")?
        .as_f64()?;
    (bandwidth > 0.0).then_some(bandwidth)
}

/// One row of the printed table.
struct Row {
    name: &'static str,
    value: String,
    detail: String,
}

fn write_row(name: &'static str, write: &WriteResult, how: &str) -> Row {
    Row {
        name,
        value: format!("{:.0} MB/s", write.mb_per_s),
        detail: format!(
            "{how}; {} B records, {} durable in {:.2} s, {} groups of {:.0} KiB on average",
            write.record_bytes,
            write.records,
            write.seconds,
            write.groups,
            write.group_bytes_average / 1024.0,
        ),
    }
}

fn ratio_row(name: &'static str, ratio: Option<f64>, goal: Option<f64>) -> Row {
    let verdict = match (ratio, goal) {
        (Some(ratio), Some(goal)) if ratio < goal => {
            format!("goal >= {goal:.2} (reported, not asserted): BELOW GOAL")
        }
        (_, Some(goal)) => format!("goal >= {goal:.2} (reported, not asserted)"),
        (_, None) => "no goal: every segment is written twice (zeros, then records)".to_owned(),
    };
    Row {
        name,
        value: ratio.map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
        detail: verdict,
    }
}

/// The printed table.
fn table(report: &JournalReport) -> String {
    let crc = &report.crc32c;
    let write = &report.journal_write;
    let recovery = &report.recovery;
    let mut rows = vec![
        Row {
            name: "crc32c",
            value: format!("{:.1} GB/s", crc.gb_per_s),
            detail: format!(
                "{}, {} MiB buffer, {:.1} GB in {:.2} s",
                crc.implementation,
                crc.buffer_bytes >> 20,
                crc.bytes as f64 / 1e9,
                crc.seconds
            ),
        },
        write_row(
            "journal write",
            write,
            &format!("{} spares made ahead", write.spare_segments),
        ),
        write_row(
            "  refilling",
            &report.journal_write_refilling,
            &format!(
                "{} spares refilled while writing",
                report.journal_write_refilling.spare_segments
            ),
        ),
        match (report.fio.mb_per_s, &report.fio.error) {
            (Some(mb_per_s), _) => Row {
                name: "disk (fio)",
                value: format!("{mb_per_s:.0} MB/s"),
                detail: "the journal's write size, O_DIRECT, fdatasync after each write".to_owned(),
            },
            (None, error) => Row {
                name: "disk (fio)",
                value: "-".to_owned(),
                detail: error.clone().unwrap_or_default(),
            },
        },
        ratio_row(
            "journal / fio",
            report.journal_to_fio_ratio,
            Some(report.journal_to_fio_ratio_goal),
        ),
        ratio_row("  refilling", report.journal_refilling_to_fio_ratio, None),
        Row {
            name: "recovery scan",
            value: format!("{:.2} GB/s", recovery.gb_per_s),
            detail: format!(
                "{:.2} GB, {} records, {} segments, every CRC checked, {}; open {:.2} s (scan {:.2} s)",
                recovery.bytes as f64 / 1e9,
                recovery.records,
                recovery.segments,
                if write.backend.starts_with("io_uring") {
                    "read from the device (written with O_DIRECT, so not in the page cache)"
                } else {
                    "partly from the page cache (written through it by the buffered backend)"
                },
                recovery.seconds,
                recovery.scan_seconds
            ),
        },
    ];
    if write.spare_segments_left == 0 {
        rows.push(Row {
            name: "WARNING",
            value: String::new(),
            detail: "the spares made ahead ran out: the write path zero-filled a segment itself, so the journal write figure is low".to_owned(),
        });
    }
    let width = rows.iter().map(|row| row.value.len()).max().unwrap_or(0);
    let mut out = String::new();
    out.push('\n');
    out.push_str(&format!(
        "{:<15} {:>width$}  detail\n",
        "measurement", "result"
    ));
    for row in &rows {
        out.push_str(&format!(
            "{:<15} {:>width$}  {}\n",
            row.name, row.value, row.detail
        ));
    }
    out.push_str(&format!("fio command: {}\n", report.fio.command));
    out.push_str(&format!("journal backend: {}\n", write.backend));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_bandwidth_is_read_from_its_json_after_any_warnings() {
        let output = b"note: both iodepth >= 1 and synchronous I/O engine\n{\"jobs\": [{\"write\": {\"bw_bytes\": 2000000000}}]}";
        assert_eq!(parse_fio_write_bytes_per_second(output), Some(2e9));
        assert_eq!(parse_fio_write_bytes_per_second(b"{\"jobs\": []}"), None);
        assert_eq!(parse_fio_write_bytes_per_second(b"garbage"), None);
        let arguments = fio_arguments(Path::new("/x/f"), 1 << 20, Duration::from_secs(2));
        assert!(arguments.contains(&"--bs=1048576".to_owned()));
        assert!(arguments.contains(&"--fdatasync=1".to_owned()));
        assert!(arguments.contains(&"--runtime=2000ms".to_owned()));
    }

    #[test]
    fn command_line_parses() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "tachyon-bench",
            "journal",
            "--smoke",
            "--dir",
            "/data",
            "--duration",
            "500ms",
            "--json",
            "out.json",
        ])
        .unwrap();
        let crate::Commands::Journal(arguments) = cli.command else {
            panic!("parsed as journal")
        };
        assert!(arguments.smoke && !arguments.keep);
        assert_eq!(arguments.dir, Some(PathBuf::from("/data")));
        assert_eq!(arguments.duration, Some(Duration::from_millis(500)));
        assert_eq!(arguments.json, Some(PathBuf::from("out.json")));
    }

    /// The measurements, tiny, so they never rot (figures are not checked, only that they exist).
    #[test]
    fn the_measurements_run_tiny() {
        let crc = measure_crc(1 << 20, Duration::from_millis(5));
        assert!(crc.gb_per_s > 0.0 && crc.bytes >= 3 << 20);

        let dir =
            std::env::temp_dir().join(format!("tachyon-bench-journal-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let config = JournalConfig {
            segment_size_bytes: 1 << 20,
            spare_segments: 2,
            max_buffered_bytes: 64 << 10,
            max_record_bytes: 8 << 10,
            ..JournalConfig::default()
        };
        let duration = Duration::from_millis(30);
        let spares = Spares::ReadyAhead { count: 3 };
        let write = measure_write(&dir.join("ahead"), &config, spares, duration).unwrap();
        assert!(write.records > 0 && write.groups > 0, "{write:?}");
        let recovery = measure_recovery(&dir.join("ahead"), &config).unwrap();
        assert_eq!(recovery.records, write.records);
        assert_eq!(recovery.bytes, write.bytes_durable);
        let refilled =
            measure_write(&dir.join("refilled"), &config, Spares::Refilled, duration).unwrap();
        assert!(refilled.records > 0, "{refilled:?}");
        let report = JournalReport {
            tool: "test",
            command_line: Vec::new(),
            environment: Environment::default(),
            dir: dir.clone(),
            smoke: true,
            crc32c: crc,
            journal_write: write,
            journal_write_refilling: refilled,
            fio: FioResult {
                command: "fio".to_owned(),
                mb_per_s: None,
                error: Some("fio not installed".to_owned()),
            },
            journal_to_fio_ratio: None,
            journal_refilling_to_fio_ratio: None,
            journal_to_fio_ratio_goal: RATIO_GOAL,
            recovery,
        };
        let printed = table(&report);
        assert!(printed.contains("recovery scan"), "{printed}");
        serde_json::to_string(&report).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
