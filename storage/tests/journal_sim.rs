//! Model-based simulation of the journal's write path (redb / TigerBeetle style).
//!
//! A fake I/O backend keeps, per segment file, the bytes a crash would keep ("durable") and the
//! bytes written since the last successful fdatasync ("current"), and injects write errors, short
//! writes and fdatasync errors. Random sequences of append / submit / poll / wait / crash+reopen
//! run against an in-memory model. A crash keeps the durable image plus a random subset of the
//! 512-byte sectors written after it (a torn write). The journal must:
//! * after an injected error, refuse every later call and never advance its durable point;
//! * never report durable a record that a crash then loses;
//! * after a reopen, recover exactly a prefix of what was appended, in order, byte for byte;
//! * never touch the I/O buffer a write in flight reads from (checked when the write is reaped).

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tachyon_storage::journal::{
    AlignedBuffer, BackendKind, EventFd, IoBackend, Journal, JournalConfig, JournalError,
    Publisher, Record, RecordKind, WriteSyncOutcome, IO_BUFFER_COUNT,
};

const SECTOR_BYTES: usize = 512;
const SEEDS: u64 = 24;
const STEPS_PER_SEED: usize = 400;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Default)]
struct SimFile {
    durable: Vec<u8>,
    current: Vec<u8>,
}

struct SimDisk {
    files: HashMap<PathBuf, SimFile>,
    rng: Rng,
    fault_percent: u64,
    faults_injected: u64,
}

/// A write "in flight": its outcome, and which buffer it read with the bytes it read, so that the
/// reap can check the journal left them alone meanwhile.
struct FakeWrite {
    outcome: WriteSyncOutcome,
    buffer: usize,
    data: Vec<u8>,
}

struct FakeBackend {
    disk: Arc<Mutex<SimDisk>>,
    buffers: [AlignedBuffer; IO_BUFFER_COUNT],
    eventfd: EventFd,
    open: Option<PathBuf>,
    finished: Option<FakeWrite>,
}

impl FakeBackend {
    fn reap(&mut self) -> WriteSyncOutcome {
        let write = self.finished.take().expect("reap with nothing in flight");
        assert!(
            self.buffers[write.buffer].as_mut_slice()[..write.data.len()] == write.data[..],
            "I/O buffer {} changed while its write was in flight",
            write.buffer
        );
        write.outcome
    }
}

impl IoBackend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Custom("simulated disk")
    }

    fn open_segment(&mut self, path: &Path) -> io::Result<()> {
        assert!(
            self.finished.is_none(),
            "segment switched while a write is in flight"
        );
        let mut disk = self.disk.lock().unwrap();
        if !disk.files.contains_key(path) {
            let bytes = std::fs::read(path)?;
            disk.files.insert(
                path.to_path_buf(),
                SimFile {
                    durable: bytes.clone(),
                    current: bytes,
                },
            );
        }
        self.open = Some(path.to_path_buf());
        Ok(())
    }

    fn buffer_mut(&mut self, buffer: usize) -> &mut [u8] {
        assert!(
            self.finished
                .as_ref()
                .is_none_or(|write| write.buffer != buffer),
            "buffer {buffer} touched while a write from it is in flight"
        );
        self.buffers[buffer].as_mut_slice()
    }

    fn submit_write_sync(&mut self, buffer: usize, offset: u64, length: usize) -> io::Result<()> {
        assert!(self.finished.is_none(), "two writes in flight");
        let data = self.buffers[buffer].as_mut_slice()[..length].to_vec();
        let mut disk = self.disk.lock().unwrap();
        let fault_percent = disk.fault_percent;
        let fault = if disk.rng.chance(fault_percent) {
            1 + disk.rng.below(3)
        } else {
            0
        };
        let cut = if fault == 2 {
            disk.rng.below((length / 4096) as u64) as usize * 4096
        } else {
            length
        };
        disk.faults_injected += u64::from(fault != 0);
        let file = disk.files.get_mut(self.open.as_ref().unwrap()).unwrap();
        let end = offset as usize + length;
        if file.current.len() < end {
            file.current.resize(end, 0);
        }
        let outcome = match fault {
            1 => WriteSyncOutcome {
                write: Err(io::Error::from_raw_os_error(libc::EIO)),
                sync: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            },
            2 => {
                file.current[offset as usize..offset as usize + cut].copy_from_slice(&data[..cut]);
                WriteSyncOutcome {
                    write: Ok(cut),
                    sync: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                }
            }
            3 => {
                file.current[offset as usize..end].copy_from_slice(&data);
                WriteSyncOutcome {
                    write: Ok(length),
                    sync: Err(io::Error::from_raw_os_error(libc::EIO)),
                }
            }
            _ => {
                file.current[offset as usize..end].copy_from_slice(&data);
                file.durable = file.current.clone();
                WriteSyncOutcome {
                    write: Ok(length),
                    sync: Ok(()),
                }
            }
        };
        drop(disk);
        self.finished = Some(FakeWrite {
            outcome,
            buffer,
            data,
        });
        self.eventfd.notify();
        Ok(())
    }

    fn poll(&mut self) -> Option<WriteSyncOutcome> {
        // Half the time the write is "still in flight".
        if self.disk.lock().unwrap().rng.chance(50) {
            return None;
        }
        self.eventfd.clear();
        self.finished.is_some().then(|| self.reap())
    }

    fn wait(&mut self) -> WriteSyncOutcome {
        self.reap()
    }

    fn completion_fd(&self) -> RawFd {
        self.eventfd.fd()
    }
}

/// Writes what a power cut would leave: the durable image plus a random subset of later sectors.
fn crash(disk: &Arc<Mutex<SimDisk>>) {
    let mut disk = disk.lock().unwrap();
    let files: Vec<(PathBuf, SimFile)> = disk.files.drain().collect();
    for (path, file) in files {
        let mut image = file.durable.clone();
        image.resize(file.current.len().max(image.len()), 0);
        for (index, sector) in file.current.chunks(SECTOR_BYTES).enumerate() {
            let start = index * SECTOR_BYTES;
            if image[start..start + sector.len()] != *sector && disk.rng.chance(50) {
                image[start..start + sector.len()].copy_from_slice(sector);
            }
        }
        std::fs::write(&path, image).unwrap();
    }
}

fn config() -> JournalConfig {
    JournalConfig {
        segment_size_bytes: 16 * 1024,
        spare_segments: 1,
        max_buffered_bytes: 8 * 1024,
        max_record_bytes: 2048,
        ..JournalConfig::default()
    }
}

fn open(dir: &Path, disk: &Arc<Mutex<SimDisk>>) -> (Journal, Vec<Vec<u8>>) {
    let config = config();
    let backend = FakeBackend {
        disk: Arc::clone(disk),
        buffers: std::array::from_fn(|_| AlignedBuffer::new(config.io_buffer_bytes())),
        eventfd: EventFd::new().unwrap(),
        open: None,
        finished: None,
    };
    let mut recovered = Vec::new();
    let journal = Journal::open_with_backend(dir, config, Box::new(backend), &mut |view| {
        assert_eq!(
            view.bookmark.sequence,
            recovered.len() as u64 + 1,
            "recovered records are contiguous from 1"
        );
        recovered.push(view.record.payload.to_vec());
    })
    .unwrap();
    (journal, recovered)
}

fn run(seed: u64) -> (u64, u64, u64) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("journal-sim-{seed}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = Arc::new(Mutex::new(SimDisk {
        files: HashMap::new(),
        rng: Rng(seed * 0x9e37_79b9 + 1),
        fault_percent: 4,
        faults_injected: 0,
    }));
    let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
    let (mut journal, _) = open(&dir, &disk);
    let mut model: Vec<Vec<u8>> = Vec::new(); // payload of sequence i + 1
    let mut reported_durable = 0u64;
    let mut poisoned = false;
    let (mut crashes, mut durable_reports) = (0u64, 0u64);
    let mut observe = |result: Result<Option<u64>, JournalError>,
                       poisoned: &mut bool,
                       reported: &mut u64,
                       model_len: u64| match result {
        Ok(Some(up_to)) => {
            assert!(!*poisoned, "durable reported after a failure");
            assert!(
                up_to >= *reported && up_to <= model_len,
                "durable {up_to} (reported {reported}, appended {model_len})"
            );
            *reported = up_to;
            durable_reports += 1;
        }
        Ok(None) => assert!(!*poisoned, "a poisoned journal answered without an error"),
        Err(JournalError::Failed { cause }) => {
            // wait_durable may have completed earlier groups before the failing one.
            assert!(
                cause.durable_up_to >= *reported && cause.durable_up_to <= model_len,
                "failure durable point {}",
                cause.durable_up_to
            );
            if !*poisoned {
                *reported = cause.durable_up_to;
            }
            assert_eq!(
                cause.durable_up_to, *reported,
                "the durable point moved after the failure"
            );
            *poisoned = true;
        }
        Err(error) => panic!("unexpected error {error}"),
    };
    for _ in 0..STEPS_PER_SEED {
        match rng.below(100) {
            0..=54 => {
                let payload: Vec<u8> = (0..rng.below(1500)).map(|_| rng.next() as u8).collect();
                let record = Record {
                    kind: RecordKind::Publish,
                    timestamp_ns: model.len() as u64,
                    topic: b"t",
                    publisher: Publisher {
                        client_name_hash: 9,
                        client_sequence: model.len() as u64 + 1,
                    },
                    headers: b"",
                    payload: &payload,
                };
                match journal.append(&record) {
                    Ok(sequence) => {
                        assert!(!poisoned, "append accepted after a failure");
                        model.push(payload);
                        assert_eq!(sequence, model.len() as u64);
                    }
                    Err(JournalError::Backpressure { .. }) => assert!(!poisoned),
                    Err(error) => observe(
                        Err(error),
                        &mut poisoned,
                        &mut reported_durable,
                        model.len() as u64,
                    ),
                }
            }
            55..=69 => observe(
                journal.submit().map(|_| None),
                &mut poisoned,
                &mut reported_durable,
                model.len() as u64,
            ),
            70..=89 => observe(
                journal.poll_completions().map(|d| d.map(|d| d.up_to)),
                &mut poisoned,
                &mut reported_durable,
                model.len() as u64,
            ),
            90..=93 if !model.is_empty() => {
                let result = journal
                    .wait_durable(model.len() as u64)
                    .map(|d| Some(d.up_to));
                observe(
                    result,
                    &mut poisoned,
                    &mut reported_durable,
                    model.len() as u64,
                );
            }
            _ => {
                drop(journal);
                crash(&disk);
                crashes += 1;
                let (reopened, recovered) = open(&dir, &disk);
                journal = reopened;
                let kept = recovered.len() as u64;
                assert!(
                    kept >= reported_durable,
                    "seed {seed}: reported {reported_durable} durable, a crash kept only {kept}"
                );
                assert!(
                    kept <= model.len() as u64,
                    "recovered more than was appended"
                );
                for (index, payload) in recovered.iter().enumerate() {
                    assert_eq!(
                        payload,
                        &model[index],
                        "seed {seed}: record {} differs after recovery",
                        index + 1
                    );
                }
                model.truncate(kept as usize);
                reported_durable = kept;
                poisoned = false;
                assert_eq!(journal.last_sequence(), kept);
            }
        }
    }
    drop(journal);
    let faults = disk.lock().unwrap().faults_injected;
    std::fs::remove_dir_all(&dir).unwrap();
    (crashes, durable_reports, faults)
}

#[test]
fn random_operations_with_injected_faults_and_crashes_agree_with_the_model() {
    let (mut crashes, mut reports, mut faults) = (0, 0, 0);
    for seed in 1..=SEEDS {
        let (c, r, f) = run(seed);
        crashes += c;
        reports += r;
        faults += f;
    }
    eprintln!("simulation: {SEEDS} seeds, {crashes} crashes, {reports} durable reports, {faults} injected faults");
    assert!(
        crashes > 50 && reports > 500 && faults > 20,
        "the simulation exercised too little"
    );
}
