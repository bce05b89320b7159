//! Fatal signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) write a minidump before the
//! process dies, as a panic does.
//!
//! A signal handler may only do async-signal-safe work: no allocation, no locks, no logging.
//! Writing a minidump does all of those, so the work is split in two:
//!
//! * [`install`] starts a dedicated thread, `tachyon-crash`, that sleeps in `read` on a pipe
//!   for the whole life of the process, and installs the handler for the fatal signals.
//! * The handler, on the thread that faulted, only stores the signal, `si_code`, fault
//!   address, sender and its own thread id in atomics, writes one byte to the pipe and polls
//!   (with `nanosleep`, bounded by [`DUMP_WAIT`]) until the crash thread says the dump is
//!   written. The crash thread writes it with the ordinary [`crate::minidump::write`]; its
//!   debugger attaches from a child process and finds the faulting thread still parked in the
//!   handler, with the frames that faulted right under the signal frame.
//!
//! Then the process must still die as it would have without us (exit status, core dump):
//!
//! * The handler is installed with `SA_RESETHAND`, so the kernel puts back the default action
//!   as it enters the handler. For a real fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE with
//!   `si_code > 0`), returning re-executes the faulting instruction, which now kills the
//!   process by the default action, core dump included.
//! * A signal sent with `kill`, `raise` or `abort` (`si_code <= 0`, and SIGABRT always) is not
//!   repeated by returning, so the handler raises it again on its own thread before returning;
//!   it is blocked while the handler runs and is delivered, with the default action, on return.
//! * Before that, the handler that was installed before ours is called when it is a function:
//!   for SIGSEGV and SIGBUS that is Rust's stack-overflow detector, which prints "thread '…'
//!   has overflowed its stack" and aborts when the fault hit a guard page, or restores the
//!   default action and returns otherwise.
//!
//! What cannot hang or loop:
//!
//! * A second fatal signal while a dump is in progress (the same thread faulting again in the
//!   handler, another thread faulting, the crash thread itself faulting) skips the dump and goes
//!   straight to the default action. The same signal on another thread needs no code at all:
//!   `SA_RESETHAND` already made its action the default, process-wide.
//! * The handler waits for the crash thread at most [`DUMP_WAIT`]: a dump that deadlocks (the
//!   faulting thread died holding a lock the writer needs, say the allocator's, after heap
//!   corruption) costs 30 s, and the process still dies by its signal.
//!
//! The handler runs on the thread's alternate signal stack (`SA_ONSTACK`), so a stack overflow
//! can be reported too. Rust's std gives one to the main thread and to every thread it spawns
//! (for its stack-overflow detector), and glommio's executor threads are std threads, so every
//! thread of the server has one; [`install_alt_stack`] adds one to a thread that has none (the
//! thread calling [`install`] gets one that way if std did not give it one).

use std::ffi::c_int;
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;
use tracing::error;

/// The signals that end the process by default after a bug, and write a minidump first.
const FATAL_SIGNALS: [c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// How long the faulting thread waits for the minidump before the process dies anyway. The
/// debugger that collects backtraces is given 20 s of it (`minidump::BACKTRACE_TIMEOUT`).
pub const DUMP_WAIT: Duration = Duration::from_secs(30);

/// Size of an alternate signal stack made by [`install_alt_stack`].
const ALT_STACK_BYTES: usize = 64 * 1024;

// What the handler tells the crash thread. Written only by the first fatal signal (the one
// that wins `CRASHING`), published by the `Release` store of `SIGNAL`.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CODE: AtomicI32 = AtomicI32::new(0);
static ADDRESS: AtomicUsize = AtomicUsize::new(0);
static SENDER_PID: AtomicI32 = AtomicI32::new(0);
static SENDER_UID: AtomicU32 = AtomicU32::new(0);
static TID: AtomicI32 = AtomicI32::new(0);

/// Set by the first fatal signal: every later one goes straight to the default action.
static CRASHING: AtomicBool = AtomicBool::new(false);
/// Set by the crash thread once the minidump is written (or failed): the handler may go on.
static DUMPED: AtomicBool = AtomicBool::new(false);
/// Set by the crash thread once it logged where the dump is (after [`DUMPED`]).
static LOGGED: AtomicBool = AtomicBool::new(false);

/// How long the handler waits for the log line after the dump is on disk: the log may be held
/// by the very thread that faulted, so this wait is short and the dump never depends on it.
const LOG_WAIT: Duration = Duration::from_secs(2);
/// The pipe's write end, -1 while no crash thread is listening.
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The crash thread's id: if it faults itself, nobody is left to wait for.
static CRASH_TID: AtomicI32 = AtomicI32::new(0);
/// Per entry of `FATAL_SIGNALS`, the `SA_SIGINFO` handler installed before ours (0: none).
static PREVIOUS: [AtomicUsize; FATAL_SIGNALS.len()] =
    [const { AtomicUsize::new(0) }; FATAL_SIGNALS.len()];
static INSTALLED: AtomicBool = AtomicBool::new(false);

type SigInfoHandler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// Starts the crash thread and installs the fatal-signal handlers; later calls do nothing.
/// Minidumps go into `minidump_dir`.
pub fn install(minidump_dir: PathBuf) -> std::io::Result<()> {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return Ok(());
    }
    install_alt_stack()?;
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let [read_fd, write_fd] = fds;
    // The handler must never block on the pipe (it holds one byte per crash, but still).
    // SAFETY: `write_fd` is the pipe's write end, open and ours.
    unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let (started, running) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("tachyon-crash".into())
        .spawn(move || {
            CRASH_TID.store(gettid(), Ordering::Release);
            let _ = started.send(());
            crash_thread(read_fd, &minidump_dir);
        })?;
    // The handler must know the crash thread's id before any signal can reach it.
    let _ = running.recv();
    WAKE_FD.store(write_fd, Ordering::Release);
    for (index, &signal) in FATAL_SIGNALS.iter().enumerate() {
        // SAFETY: plain C structs, zero is a valid value for every field.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_fatal_signal as SigInfoHandler as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND;
        // SAFETY: `sa_mask` is ours; the handler only does async-signal-safe work.
        unsafe {
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, &mut previous) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let chained = previous.sa_flags & libc::SA_SIGINFO != 0
            && previous.sa_sigaction != libc::SIG_DFL
            && previous.sa_sigaction != libc::SIG_IGN;
        if chained {
            PREVIOUS[index].store(previous.sa_sigaction, Ordering::Release);
        }
    }
    Ok(())
}

/// Gives the calling thread an alternate signal stack unless it has one, so that a fatal signal
/// caused by a stack overflow can still run the handler. The stack is never freed: a thread
/// that exits leaves 64 KiB behind, so call this only on long-lived threads. Threads spawned by
/// Rust's std (glommio's executors are) already have one and need no call.
pub fn install_alt_stack() -> std::io::Result<()> {
    // SAFETY: querying only; `current` is written by the kernel.
    let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
    if unsafe { libc::sigaltstack(std::ptr::null(), &mut current) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if current.ss_flags & libc::SS_DISABLE == 0 {
        return Ok(());
    }
    // SAFETY: a fresh anonymous private mapping, owned by nobody else.
    let memory = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if memory == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let stack = libc::stack_t {
        ss_sp: memory,
        ss_flags: 0,
        ss_size: ALT_STACK_BYTES,
    };
    // SAFETY: `stack` describes the mapping above, which is leaked and so outlives the thread.
    if unsafe { libc::sigaltstack(&stack, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The signal handler. Only async-signal-safe calls: atomics, `write`, `nanosleep`,
/// `clock_gettime`, `raise`, `syscall(gettid)`.
extern "C" fn on_fatal_signal(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo; the union fields read are the
    // ones the kernel fills for this si_code (the fault address for faults, the sender else).
    let (code, address, sender_pid, sender_uid) = unsafe {
        match info.as_ref() {
            None => (libc::SI_USER, 0, 0, 0),
            Some(info) if info.si_code > 0 => (info.si_code, info.si_addr() as usize, 0, 0),
            Some(info) => (info.si_code, 0, info.si_pid(), info.si_uid()),
        }
    };
    let tid = gettid();
    let first = !CRASHING.swap(true, Ordering::AcqRel);
    if first {
        let wake_fd = WAKE_FD.load(Ordering::Acquire);
        if wake_fd >= 0 && tid != CRASH_TID.load(Ordering::Acquire) {
            CODE.store(code, Ordering::Relaxed);
            ADDRESS.store(address, Ordering::Relaxed);
            SENDER_PID.store(sender_pid, Ordering::Relaxed);
            SENDER_UID.store(sender_uid, Ordering::Relaxed);
            TID.store(tid, Ordering::Relaxed);
            SIGNAL.store(signal, Ordering::Release);
            let byte = 1u8;
            // SAFETY: one byte from a live local into the pipe's write end.
            let woken = unsafe { libc::write(wake_fd, (&byte as *const u8).cast(), 1) } == 1;
            if woken {
                wait_for_dump();
            }
        }
        // Rust's stack-overflow detector for SIGSEGV/SIGBUS: it reports an overflow and aborts
        // (SIGABRT then finds `CRASHING` set and goes default), or restores the default action.
        if code > 0 {
            if let Some(index) = FATAL_SIGNALS.iter().position(|&fatal| fatal == signal) {
                let previous = PREVIOUS[index].load(Ordering::Acquire);
                if previous != 0 {
                    // SAFETY: the value was an SA_SIGINFO handler's address in `install`.
                    let previous: SigInfoHandler = unsafe { std::mem::transmute(previous) };
                    previous(signal, info, context);
                }
            }
        }
    }
    // SA_RESETHAND made the action the default. A fault repeats itself when we return; a
    // signal that was sent (kill, raise, abort) has to be sent again.
    if !repeats_on_return(signal, code) {
        // SAFETY: raise is async-signal-safe; the signal stays pending until we return.
        unsafe { libc::raise(signal) };
    }
}

/// Whether returning from the handler re-executes the instruction that raised `signal`.
fn repeats_on_return(signal: c_int, code: c_int) -> bool {
    // A machine-check SIGBUS reported asynchronously (BUS_MCEERR_AO) does not repeat.
    const BUS_MCEERR_AO: c_int = 5;
    code > 0 && signal != libc::SIGABRT && !(signal == libc::SIGBUS && code == BUS_MCEERR_AO)
}

/// Polls (async-signal-safely) until the crash thread has written the minidump, at most
/// [`DUMP_WAIT`].
fn wait_for_dump() {
    if wait_for(&DUMPED, DUMP_WAIT) {
        wait_for(&LOGGED, LOG_WAIT);
    }
}

/// Polls `flag` async-signal-safely for at most `limit`; whether it was set.
fn wait_for(flag: &AtomicBool, limit: Duration) -> bool {
    let start = monotonic_ms();
    let pause = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    while !flag.load(Ordering::Acquire) {
        if monotonic_ms().saturating_sub(start) >= limit.as_millis() as u64 {
            return false;
        }
        // SAFETY: nanosleep is async-signal-safe; an interruption just polls again.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    }
    true
}

fn monotonic_ms() -> u64 {
    // SAFETY: clock_gettime is async-signal-safe and writes `now`.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

fn gettid() -> i32 {
    // SAFETY: gettid cannot fail and is async-signal-safe (as a raw syscall).
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The crash thread: asleep in `read` until a fatal signal writes the byte, then writes the
/// minidump and lets the faulting thread go on to die.
fn crash_thread(read_fd: c_int, folder: &Path) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a live local from the pipe's read end, which we own.
        let read = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if read == 1 {
            break;
        }
        if read < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // Cannot happen while the write end is open; if it does, the handler must not wait.
        WAKE_FD.store(-1, Ordering::Release);
        error!("the crash thread stopped: fatal signals will not write minidumps");
        return;
    }
    let fault = Fault {
        signal: SIGNAL.load(Ordering::Acquire),
        code: CODE.load(Ordering::Relaxed),
        address: ADDRESS.load(Ordering::Relaxed),
        sender_pid: SENDER_PID.load(Ordering::Relaxed),
        sender_uid: SENDER_UID.load(Ordering::Relaxed),
        tid: TID.load(Ordering::Relaxed),
    };
    let thread = std::fs::read_to_string(format!("/proc/self/task/{}/comm", fault.tid))
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let reason = format!("fatal signal {}", signal_name(fault.signal));
    let detail = fault.describe(&thread);
    let written = crate::minidump::write(folder, &reason, Some(&detail));
    // The dump is on disk (or failed): the faulting thread need not wait for the log below,
    // which it may itself be holding.
    DUMPED.store(true, Ordering::Release);
    match written {
        Ok(path) => error!(
            "{reason} on thread {} {thread:?}: minidump written {}",
            fault.tid,
            path.display()
        ),
        Err(failure) => error!(
            folder = %folder.display(),
            "{reason} on thread {} {thread:?}: cannot write a minidump: {failure}",
            fault.tid
        ),
    }
    LOGGED.store(true, Ordering::Release);
}

/// What the handler recorded about a fatal signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fault {
    signal: c_int,
    code: c_int,
    /// The faulting address (`si_addr`), for faults (`code > 0`).
    address: usize,
    /// Who sent the signal, for sent signals (`code <= 0`).
    sender_pid: i32,
    sender_uid: u32,
    /// The thread the signal was delivered to: the one that faulted, for a fault.
    tid: i32,
}

impl Fault {
    /// The minidump's detail section.
    fn describe(&self, thread: &str) -> String {
        let mut text = format!(
            "fatal signal {} ({}), si_code {} ({})\n",
            signal_name(self.signal),
            signal_meaning(self.signal),
            self.code,
            code_name(self.signal, self.code)
        );
        if self.code > 0 {
            text.push_str(&format!("fault address: {:#x}\n", self.address));
        } else {
            text.push_str(&format!(
                "sent by: pid {} uid {}\n",
                self.sender_pid, self.sender_uid
            ));
        }
        text.push_str(&format!("thread: {} {thread:?}\n", self.tid));
        text.push_str(
            "\nThat thread waits in the crash handler (tachyon_net::crash::on_fatal_signal) \
             while this is written; in its backtrace below, the frames under the signal frame \
             (__restore_rt) are where it faulted, or where a sent signal found it.",
        );
        text
    }
}

fn signal_name(signal: c_int) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGABRT => "SIGABRT".into(),
        other => format!("signal {other}"),
    }
}

fn signal_meaning(signal: c_int) -> &'static str {
    match signal {
        libc::SIGSEGV => "invalid memory reference",
        libc::SIGBUS => "bad memory access",
        libc::SIGILL => "illegal instruction",
        libc::SIGFPE => "arithmetic exception",
        libc::SIGABRT => "abort",
        _ => "?",
    }
}

/// The name of an `si_code` (Linux's `<asm-generic/siginfo.h>`); the fault codes depend on the
/// signal.
fn code_name(signal: c_int, code: c_int) -> &'static str {
    match (signal, code) {
        (_, libc::SI_USER) => "SI_USER: sent by kill",
        (_, libc::SI_KERNEL) => "SI_KERNEL: sent by the kernel",
        (_, libc::SI_QUEUE) => "SI_QUEUE: sent by sigqueue",
        (_, libc::SI_TKILL) => "SI_TKILL: sent by tkill/raise/abort",
        (libc::SIGSEGV, 1) => "SEGV_MAPERR: address not mapped",
        (libc::SIGSEGV, 2) => "SEGV_ACCERR: no permission for the mapping",
        (libc::SIGSEGV, 4) => "SEGV_PKUERR: protection key",
        (libc::SIGBUS, 1) => "BUS_ADRALN: misaligned address",
        (libc::SIGBUS, 2) => "BUS_ADRERR: no such physical address (file mapping past its end?)",
        (libc::SIGBUS, 3) => "BUS_OBJERR: hardware error",
        (libc::SIGBUS, 4 | 5) => "BUS_MCEERR: machine check, memory corrupted",
        (libc::SIGILL, 1) => "ILL_ILLOPC: illegal opcode",
        (libc::SIGILL, 2) => "ILL_ILLOPN: illegal operand (ud2: a Rust abort)",
        (libc::SIGILL, 5) => "ILL_PRVOPC: privileged opcode",
        (libc::SIGFPE, 1) => "FPE_INTDIV: integer divide by zero",
        (libc::SIGFPE, 2) => "FPE_INTOVF: integer overflow",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_fault_is_described_with_its_address_and_thread() {
        let fault = Fault {
            signal: libc::SIGSEGV,
            code: 1,
            address: 0xdead_0000,
            sender_pid: 0,
            sender_uid: 0,
            tid: 4242,
        };
        let text = fault.describe("tachyon-shard-3");
        assert!(
            text.starts_with(
                "fatal signal SIGSEGV (invalid memory reference), si_code 1 (SEGV_MAPERR"
            ),
            "{text}"
        );
        assert!(text.contains("fault address: 0xdead0000\n"), "{text}");
        assert!(
            text.contains("thread: 4242 \"tachyon-shard-3\"\n"),
            "{text}"
        );
        assert!(!text.contains("sent by"), "{text}");
    }

    #[test]
    fn a_sent_signal_is_described_with_its_sender() {
        let fault = Fault {
            signal: libc::SIGABRT,
            code: libc::SI_TKILL,
            address: 0,
            sender_pid: 77,
            sender_uid: 1000,
            tid: 77,
        };
        let text = fault.describe("tachyon");
        assert!(text.contains("fatal signal SIGABRT (abort), si_code -6 (SI_TKILL"));
        assert!(text.contains("sent by: pid 77 uid 1000\n"), "{text}");
        assert!(!text.contains("fault address"), "{text}");
        assert_eq!(signal_name(libc::SIGBUS), "SIGBUS");
        assert_eq!(signal_name(64), "signal 64");
        assert_eq!(
            code_name(libc::SIGBUS, 2).split(':').next(),
            Some("BUS_ADRERR")
        );
        assert_eq!(code_name(libc::SIGILL, 99), "?");
    }

    #[test]
    fn only_a_fault_repeats_when_the_handler_returns() {
        assert!(repeats_on_return(libc::SIGSEGV, 1));
        assert!(repeats_on_return(libc::SIGILL, 2));
        assert!(repeats_on_return(libc::SIGSEGV, libc::SI_KERNEL));
        assert!(!repeats_on_return(libc::SIGSEGV, libc::SI_USER));
        assert!(!repeats_on_return(libc::SIGBUS, libc::SI_TKILL));
        assert!(!repeats_on_return(libc::SIGABRT, libc::SI_TKILL));
        assert!(!repeats_on_return(libc::SIGABRT, 1));
    }

    fn has_alt_stack() -> bool {
        let mut current: libc::stack_t = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::sigaltstack(std::ptr::null(), &mut current) },
            0
        );
        current.ss_flags & libc::SS_DISABLE == 0 && current.ss_size > 0
    }

    /// The handler runs with SA_ONSTACK and relies on std's alternate signal stacks for the
    /// threads std spawns (glommio's executors among them): check that std still makes them.
    #[test]
    fn std_threads_have_an_alternate_signal_stack_and_others_can_get_one() {
        let std_made_one = std::thread::spawn(has_alt_stack).join().unwrap();
        assert!(
            std_made_one,
            "std no longer gives threads an alternate signal stack"
        );
        let ours = std::thread::spawn(|| {
            // Take std's away (std frees its own at thread exit either way), then add ours.
            let disabled = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            assert_eq!(
                unsafe { libc::sigaltstack(&disabled, std::ptr::null_mut()) },
                0
            );
            assert!(!has_alt_stack());
            install_alt_stack().unwrap();
            has_alt_stack()
        })
        .join()
        .unwrap();
        assert!(ours);
    }

    /// Set in the child process of the crash tests: `MODE:FOLDER`.
    const CHILD: &str = "TACHYON_CRASH_TEST_CHILD";
    const CHILD_TEST: &str = "crash::tests::crash_test_child_process";

    /// Not a test by itself: the process the crash tests start, which installs the handlers and
    /// then crashes as the environment says. Without the environment it does nothing.
    #[test]
    fn crash_test_child_process() {
        let Ok(order) = std::env::var(CHILD) else {
            return;
        };
        let (mode, folder) = order.split_once(':').unwrap();
        // No core file from the deliberate crash.
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
        install(PathBuf::from(folder)).unwrap();
        match mode {
            "segv" => {
                // A real fault: read a page mapped without any access.
                let page = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert_ne!(page, libc::MAP_FAILED);
                println!("fault address {:#x}", page as usize);
                let value = unsafe { std::ptr::read_volatile(page as *const u8) };
                println!("read {value} from an inaccessible page");
            }
            "abort" => std::process::abort(),
            "overflow" => {
                fn recurse(depth: u64) -> u64 {
                    let pad = std::hint::black_box([depth; 512]);
                    if depth == u64::MAX {
                        return 0;
                    }
                    recurse(depth + 1) + pad[7]
                }
                println!("{}", recurse(0));
            }
            other => panic!("unknown mode {other}"),
        }
    }

    /// What a crashed child left behind.
    struct Crashed {
        pid: u32,
        /// The signal that ended it.
        signal: Option<i32>,
        stdout: String,
        stderr: String,
        /// The text of its one minidump.
        minidump: String,
    }

    /// Runs the child in `mode` and collects its end and its one minidump.
    fn crash_child(mode: &str) -> Crashed {
        let folder =
            std::env::temp_dir().join(format!("tachyon-crash-{mode}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, format!("{mode}:{}", folder.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let dumps: Vec<_> = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .filter_map(|entry| Some(entry.ok()?.path()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            dumps.len(),
            1,
            "one minidump, got {dumps:?}; child stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let minidump = std::fs::read_to_string(&dumps[0]).unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        Crashed {
            pid,
            signal: output.status.signal(),
            stdout,
            stderr,
            minidump,
        }
    }

    #[test]
    fn a_segfault_writes_a_minidump_and_still_dies_by_sigsegv() {
        let crashed = crash_child("segv");
        let (stdout, text) = (&crashed.stdout, &crashed.minidump);
        assert_eq!(crashed.signal, Some(libc::SIGSEGV), "{stdout}\n{text}");
        assert!(!stdout.contains("from an inaccessible page"), "{stdout}");
        let address = stdout
            .lines()
            .find_map(|line| Some(line.split_once("fault address ")?.1.trim()))
            .expect("the child names the page");
        assert!(text.contains("reason: fatal signal SIGSEGV"), "{text}");
        assert!(text.contains("si_code 2 (SEGV_ACCERR"), "{text}");
        assert!(
            text.contains(&format!("fault address: {address}\n")),
            "{text}"
        );
        assert!(text.contains("\"tachyon-crash\""), "{text}");
        assert!(text.contains("## user-space backtraces"), "{text}");
    }

    #[test]
    fn a_stack_overflow_writes_a_minidump_and_is_still_reported_by_std() {
        let crashed = crash_child("overflow");
        let text = &crashed.minidump;
        // The handler ran on the alternate stack; then std's overflow detector, chained, said so
        // and aborted, and the abort went straight to the default action (no second minidump).
        assert_eq!(crashed.signal, Some(libc::SIGABRT), "{text}");
        assert!(
            crashed.stderr.contains("has overflowed its stack"),
            "{}",
            crashed.stderr
        );
        assert!(text.contains("reason: fatal signal SIGSEGV"), "{text}");
        assert!(text.contains("fault address: 0x"), "{text}");
    }

    #[test]
    fn an_abort_writes_a_minidump_and_still_dies_by_sigabrt() {
        let crashed = crash_child("abort");
        let text = &crashed.minidump;
        assert_eq!(crashed.signal, Some(libc::SIGABRT), "{text}");
        assert!(text.contains("reason: fatal signal SIGABRT"), "{text}");
        assert!(text.contains("(SI_TKILL"), "{text}");
        assert!(
            text.contains(&format!("sent by: pid {} ", crashed.pid)),
            "{text}"
        );
    }
}
