//! The log callback: where the driver's `log` records go when ttdrv is used from C (rustls-ffi's model, with a
//! delivery rule that makes re-entry safe).
//!
//! The C library installs `Logger` as the process's `log` logger on its first call. A record is delivered:
//! - to the callback installed with `ttdrv_set_log_callback`, at or above the level of `ttdrv_set_log_level`:
//!   - logged on a thread inside a ttdrv C call: queued on that thread and delivered by `deliver_pending` at the
//!     end of the call, on the calling thread, before the call returns — after every lock the call took is released,
//!     so the callback may call into ttdrv;
//!   - logged anywhere else (the emulator's engine threads, cleanup that runs on a thread no call is on): queued
//!     process-wide and delivered by ttdrv's own delivery thread (`ttdrv-log`), never by the thread that logged it,
//!     which may hold a lock or be a device thread that must not wait for the application;
//! - with no callback installed, to stderr if (and only if) the environment sets `TTDRV_LOG` to a level — the user
//!   asking for it — and otherwise nowhere.
//!
//! Queues are bounded: a callback that cannot keep up loses records, and the next delivery says how many.
//! `ttdrv_set_log_callback` waits until no other thread is inside the previous callback, so the caller may free
//! that callback's userdata once it returns.

use super::boundary::{guard, in_call};
use super::error::{FfiError, ttdrv_status};
use log::{Level, LevelFilter, Log, Metadata, Record};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::{c_char, c_void};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use strum::FromRepr;

/// Severity of a log record, and the threshold of `ttdrv_set_log_level`. The values are those of Rust's `log`
/// crate; `TTDRV_LOG_LEVEL_OFF` is a threshold only (no record has it).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, FromRepr)]
pub enum ttdrv_log_level {
    /// No records (threshold only).
    Off = 0,
    /// A failure ttdrv could not handle, including a caught panic.
    Error = 1,
    /// Something the user should know and probably fix: a fallback was taken (no hugepages, no interrupts), work
    /// was abandoned at close.
    Warn = 2,
    /// Progress worth a line in a log.
    Info = 3,
    /// Details for diagnosing a problem.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl ttdrv_log_level {
    fn of(level: Level) -> ttdrv_log_level {
        match level {
            Level::Error => ttdrv_log_level::Error,
            Level::Warn => ttdrv_log_level::Warn,
            Level::Info => ttdrv_log_level::Info,
            Level::Debug => ttdrv_log_level::Debug,
            Level::Trace => ttdrv_log_level::Trace,
        }
    }

    fn filter(self) -> LevelFilter {
        match self {
            ttdrv_log_level::Off => LevelFilter::Off,
            ttdrv_log_level::Error => LevelFilter::Error,
            ttdrv_log_level::Warn => LevelFilter::Warn,
            ttdrv_log_level::Info => LevelFilter::Info,
            ttdrv_log_level::Debug => LevelFilter::Debug,
            ttdrv_log_level::Trace => LevelFilter::Trace,
        }
    }
}

/// Receives ttdrv's log records (`ttdrv_set_log_callback`). `userdata` is the pointer given with the callback;
/// `level` the record's severity; `message` the text, UTF-8, `message_len` bytes long and also NUL-terminated
/// (`message[message_len] == '\0'`), valid only until the callback returns.
///
/// Threads: the callback runs on the thread that made a ttdrv call, just before that call returns, for the records
/// the call logged; and on ttdrv's log delivery thread (named `ttdrv-log`) for records logged on threads that are not
/// inside a ttdrv call (the emulated device's engine threads, cleanup on a driver thread). It may therefore run on
/// several threads at once and must be thread-safe. It is never called while ttdrv holds a lock, and it may call any
/// ttdrv function (the records of such a call are delivered, nested, before that call returns). It must return
/// normally: no C++ exception or `longjmp` may leave it.
pub type ttdrv_log_callback = Option<
    unsafe extern "C" fn(userdata: *mut c_void, level: ttdrv_log_level, message: *const c_char, message_len: usize),
>;

/// The callback and its userdata (as an address: the pointer is the application's, ttdrv never dereferences it).
type Installed = (unsafe extern "C" fn(*mut c_void, ttdrv_log_level, *const c_char, usize), usize);

/// One record waiting for delivery: its level and its text with a NUL after it.
struct Pending {
    level: ttdrv_log_level,
    text: Vec<u8>,
}

impl Pending {
    fn new(level: ttdrv_log_level, msg: &str) -> Pending {
        let mut text: Vec<u8> = msg.bytes().filter(|&b| b != 0).collect();
        text.push(0);
        Pending { level, text }
    }

    fn dropped(n: u64) -> Pending {
        Pending::new(
            ttdrv_log_level::Warn,
            &format!("{n} ttdrv log record(s) were dropped: the log callback did not keep up with them"),
        )
    }
}

/// Records kept at most per queue (per thread inside a call, and process-wide for the delivery thread).
const QUEUE_LIMIT: usize = 4096;

struct Sink {
    callback: Option<Installed>,
    /// Callback invocations running now, on all threads.
    running: usize,
    /// Records for the delivery thread.
    queue: VecDeque<Pending>,
    /// Records the delivery queue had no room for since the last delivery.
    dropped: u64,
    /// The process that started the delivery thread (a forked child has none and starts its own).
    thread_pid: Option<u32>,
}

static SINK: Mutex<Sink> =
    Mutex::new(Sink { callback: None, running: 0, queue: VecDeque::new(), dropped: 0, thread_pid: None });
/// Signalled when the delivery queue gains a record.
static WORK: Condvar = Condvar::new();
/// Signalled when a callback invocation ends.
static IDLE: Condvar = Condvar::new();

/// Whether a callback is installed (the logger's fast path; SINK is the truth at delivery).
static HAVE_CALLBACK: AtomicBool = AtomicBool::new(false);
/// The callback's threshold, a `LevelFilter` as usize (default: warnings and errors).
static CALLBACK_LEVEL: AtomicUsize = AtomicUsize::new(LevelFilter::Warn as usize);
/// Whether [`LOGGER`] is the process's logger (it is not when a Rust program linking this crate set its own first).
static OURS: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Records logged by the ttdrv call this thread is in, delivered at its end.
    static CALL_RECORDS: RefCell<(Vec<Pending>, u64)> = const { RefCell::new((Vec::new(), 0)) };
    /// How many callback invocations this thread is inside.
    static IN_CALLBACK: Cell<usize> = const { Cell::new(0) };
}

fn sink() -> MutexGuard<'static, Sink> {
    // Nothing panics while holding the lock; a poisoned lock still holds consistent data.
    SINK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one line to stderr. Only ever called for output the user asked for by setting `TTDRV_LOG`.
fn write_stderr(line: std::fmt::Arguments<'_>) {
    // TTDRV_LOG asked for this output: the only place the library writes to the host application's stderr.
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The level `TTDRV_LOG` asks for on stderr, read once; `Off` when unset.
fn env_level() -> LevelFilter {
    static ENV: OnceLock<LevelFilter> = OnceLock::new();
    *ENV.get_or_init(|| match std::env::var("TTDRV_LOG") {
        Err(_) => LevelFilter::Off,
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            // The user asked for logs on stderr, so this note goes there too.
            write_stderr(format_args!(
                "ttdrv: TTDRV_LOG={v:?} is not a level (off, error, warn, info, debug, trace); using warn"
            ));
            LevelFilter::Warn
        }),
    })
}

fn callback_level() -> LevelFilter {
    match CALLBACK_LEVEL.load(Ordering::Relaxed) {
        0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// The most verbose level anything wants now.
fn effective_level() -> LevelFilter {
    if HAVE_CALLBACK.load(Ordering::Acquire) { callback_level() } else { env_level() }
}

fn update_max_level() {
    if OURS.load(Ordering::Acquire) {
        log::set_max_level(effective_level());
    }
}

/// The `log` logger of the C library.
struct Logger;

static LOGGER: Logger = Logger;

/// Makes [`LOGGER`] the process's logger if no other is; called once, by the first C call.
pub(crate) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        OURS.store(true, Ordering::Release);
        update_max_level();
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        // The driver's crates only (ttdrv, ttdrv_emu, ttdrv_ffi, ...): in a Rust program that links this crate,
        // other crates' records are not the C application's business.
        m.target().starts_with("ttdrv") && m.level() <= effective_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let p = Pending::new(ttdrv_log_level::of(r.level()), &r.args().to_string());
        if !HAVE_CALLBACK.load(Ordering::Acquire) {
            to_stderr(&p);
        } else if in_call() {
            keep_for_call_end(p);
        } else {
            enqueue(p);
        }
    }

    fn flush(&self) {}
}

/// Queues a record for the end of the current call, or for the delivery thread when this thread's store is gone
/// (a call from a thread-exit destructor).
fn keep_for_call_end(p: Pending) {
    let mut slot = Some(p);
    let _ = CALL_RECORDS.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.0.len() < QUEUE_LIMIT {
            c.0.extend(slot.take());
        } else {
            slot = None;
            c.1 += 1;
        }
    });
    if let Some(p) = slot {
        enqueue(p);
    }
}

/// Queues a record for the delivery thread, starting it if this process has none.
fn enqueue(p: Pending) {
    let mut s = sink();
    if s.queue.len() >= QUEUE_LIMIT {
        s.dropped += 1;
        return;
    }
    s.queue.push_back(p);
    let pid = std::process::id();
    if s.thread_pid != Some(pid) {
        // A failure (no threads left) leaves the record queued; the next record tries again.
        let started = std::thread::Builder::new().name("ttdrv-log".into()).spawn(delivery_thread).is_ok();
        if started {
            s.thread_pid = Some(pid);
        }
    }
    drop(s);
    WORK.notify_one();
}

fn delivery_thread() {
    loop {
        let (dropped, p) = {
            let mut s = sink();
            while s.queue.is_empty() {
                s = WORK.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            (std::mem::take(&mut s.dropped), s.queue.pop_front())
        };
        if dropped > 0 {
            deliver(&Pending::dropped(dropped));
        }
        if let Some(p) = p {
            deliver(&p);
        }
    }
}

/// Delivers the records the current call logged; called by the boundary when the outermost call on this thread
/// ends, after it released everything it held.
pub(crate) fn deliver_pending() {
    // The common case, every successful dispatch: nothing was logged. Checked without taking the list, which would
    // drop its storage.
    let nothing = CALL_RECORDS.try_with(|c| matches!(&*c.borrow(), (v, 0) if v.is_empty()));
    if nothing != Ok(false) {
        return;
    }
    loop {
        let Ok((batch, dropped)) = CALL_RECORDS.try_with(|c| std::mem::take(&mut *c.borrow_mut())) else {
            return;
        };
        if batch.is_empty() && dropped == 0 {
            return;
        }
        for p in &batch {
            deliver(p);
        }
        if dropped > 0 {
            deliver(&Pending::dropped(dropped));
        }
        // A callback that called into ttdrv had those records delivered by that call; anything left is new.
    }
}

/// Hands one record to the callback installed now (no lock is held during the call), or to stderr when none is
/// and `TTDRV_LOG` asks for it.
fn deliver(p: &Pending) {
    let installed = {
        let mut s = sink();
        let cb = s.callback;
        if cb.is_some() {
            s.running += 1;
        }
        cb
    };
    let Some((f, userdata)) = installed else {
        to_stderr(p);
        return;
    };
    if p.level.filter() <= callback_level() {
        let _ = IN_CALLBACK.try_with(|d| d.set(d.get() + 1));
        // SAFETY: `f` is the application's callback, installed with its userdata; the message is a live buffer of
        // `len` bytes plus a NUL, valid for the duration of the call (ttdrv_log_callback's contract).
        unsafe { f(userdata as *mut c_void, p.level, p.text.as_ptr() as *const c_char, p.text.len() - 1) };
        let _ = IN_CALLBACK.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
    sink().running -= 1;
    IDLE.notify_all();
}

fn to_stderr(p: &Pending) {
    if p.level.filter() <= env_level() {
        let text = String::from_utf8_lossy(&p.text[..p.text.len() - 1]);
        let name = ttdrv_log_level_name(p.level);
        write_stderr(format_args!("ttdrv {name}: {text}"));
    }
}

fn ttdrv_log_level_name(l: ttdrv_log_level) -> &'static str {
    match l {
        ttdrv_log_level::Off => "OFF",
        ttdrv_log_level::Error => "ERROR",
        ttdrv_log_level::Warn => "WARN",
        ttdrv_log_level::Info => "INFO",
        ttdrv_log_level::Debug => "DEBUG",
        ttdrv_log_level::Trace => "TRACE",
    }
}

/// Installs `callback` to receive ttdrv's log records, with `userdata` passed back on every invocation, replacing the
/// previous callback; NULL removes it. Records at or above the level of `ttdrv_set_log_level` (default
/// `TTDRV_LOG_LEVEL_WARN`) are delivered: those logged during a ttdrv call on the calling thread just before that call
/// returns, the others on ttdrv's log delivery thread (see `ttdrv_log_callback` for the threads and what the callback
/// may do). A caught panic is logged at `TTDRV_LOG_LEVEL_ERROR`.
///
/// Without a callback, ttdrv writes nothing anywhere, unless the environment variable `TTDRV_LOG` is set to a level
/// (`error`, `warn`, `info`, `debug`, `trace`): then records at or above it go to stderr. An installed callback
/// replaces that.
///
/// Ownership: ttdrv keeps `userdata` but never dereferences it. When this call returns, no other thread is running the
/// previous callback and it will not be called again, so its userdata may be freed — except when this is called from
/// inside the callback, which cannot wait for the other threads' invocations. Thread: any.
/// Errors: INVALID_STATE (the process already has another Rust `log` logger: possible only when ttdrv is linked into a
/// Rust program as a Rust library, never for a C program).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_set_log_callback(callback: ttdrv_log_callback, userdata: *mut c_void) -> ttdrv_status {
    guard("ttdrv_set_log_callback", || {
        if !OURS.load(Ordering::Acquire) {
            return Err(FfiError::Status(
                ttdrv_status::InvalidState,
                "this process already has another Rust `log` logger, so ttdrv's records go there and cannot reach a \
                 callback; configure that logger instead"
                    .into(),
            ));
        }
        let inside = IN_CALLBACK.try_with(Cell::get).unwrap_or(0) > 0;
        let mut s = sink();
        s.callback = callback.map(|f| (f, userdata as usize));
        HAVE_CALLBACK.store(callback.is_some(), Ordering::Release);
        update_max_level();
        if !inside {
            while s.running > 0 {
                s = IDLE.wait(s).unwrap_or_else(|e| e.into_inner());
            }
        }
        Ok(())
    })
}

/// Sets the lowest severity delivered to the log callback: a `TTDRV_LOG_LEVEL_*` value (`TTDRV_LOG_LEVEL_OFF`
/// delivers nothing). The default is `TTDRV_LOG_LEVEL_WARN`. It may be set before or after the callback is installed;
/// it does not change what `TTDRV_LOG` sends to stderr when no callback is installed.
///
/// Thread: any. Errors: INVALID_ARGUMENT (not a `TTDRV_LOG_LEVEL_*` value).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_set_log_level(level: u32) -> ttdrv_status {
    guard("ttdrv_set_log_level", || {
        let l = ttdrv_log_level::from_repr(level).ok_or_else(|| {
            FfiError::invalid(format!(
                "log level {level} is not a TTDRV_LOG_LEVEL_* value; pass TTDRV_LOG_LEVEL_OFF (0) to \
                 TTDRV_LOG_LEVEL_TRACE (5)"
            ))
        })?;
        CALLBACK_LEVEL.store(l.filter() as usize, Ordering::Relaxed);
        update_max_level();
        Ok(())
    })
}
