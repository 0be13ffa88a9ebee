//! The driver's `log` records, delivered to Python's `logging` (logger `ttdrv` and its children).
//!
//! Hand-written rather than `pyo3-log` because of one rule: a record is never handed to Python on the thread and
//! at the moment it is logged. The driver logs while it holds its own locks (a queue's state, device memory),
//! often on a thread that released the GIL for a blocking call; taking the GIL there would wait for any Python
//! thread that holds it — and that thread may be waiting for the very lock the logging thread holds (a deadlock
//! `pyo3-log` documents as the caller's problem). So [`Logger::log`] only queues the record, and [`flush`] hands the
//! queue to `logging.getLogger(...).log(...)` when a ttdrv call returns to Python, holding the GIL and no driver
//! lock. Records logged by threads that never return to Python (there are none in the driver today) wait for the
//! next ttdrv call. The queue is bounded; when it overflows, the next flush says how many records were lost.
//!
//! Logger names follow the record's module: `ttdrv::dma::memory` logs to `ttdrv.dma.memory`, other crates' records
//! to `ttdrv.<crate>...`, so `logging.getLogger("ttdrv")` sees them all.

use log::{Level, LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Records kept at most between two flushes.
const QUEUE_LIMIT: usize = 1024;

struct Queued {
    level: Level,
    target: String,
    message: String,
}

static QUEUE: Mutex<VecDeque<Queued>> = Mutex::new(VecDeque::new());
/// Set when the queue is not empty: the check every call makes on its way out is one relaxed load.
static PENDING: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= QUEUE_LIMIT {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.push_back(Queued { level: r.level(), target: r.target().to_string(), message: r.args().to_string() });
        PENDING.store(true, Ordering::Release);
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger as the process's `log` logger. If another library already installed one, the driver's
/// records go there instead; that is the other library's choice and not an error.
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        // Python's logging filters by level itself; debug records are rare in the driver (open, close, VFIO).
        log::set_max_level(LevelFilter::Debug);
    }
}

/// Python's level number for a record's level.
fn py_level(l: Level) -> i32 {
    match l {
        Level::Error => 40,
        Level::Warn => 30,
        Level::Info => 20,
        Level::Debug => 10,
        Level::Trace => 5,
    }
}

/// The Python logger name for a `log` target.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("ttdrv") {
        Some(rest) if rest.is_empty() || rest.starts_with('.') => dotted,
        _ => format!("ttdrv.{dotted}"),
    }
}

static GET_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Hands queued records to Python's `logging`. Called with the GIL held and no driver lock, when a call returns.
#[inline]
pub fn flush(py: Python<'_>) {
    if PENDING.load(Ordering::Acquire) {
        flush_slow(py);
    }
}

#[cold]
fn flush_slow(py: Python<'_>) {
    let records: Vec<Queued> = {
        let mut q = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
        PENDING.store(false, Ordering::Release);
        q.drain(..).collect()
    };
    let get_logger =
        match GET_LOGGER.get_or_try_init(py, || py.import("logging")?.getattr("getLogger").map(Bound::unbind)) {
            Ok(f) => f.bind(py),
            Err(e) => {
                e.write_unraisable(py, None);
                return;
            }
        };
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    let emit = |name: &str, level: i32, msg: &str| -> PyResult<()> {
        get_logger.call1((name,))?.call_method1("log", (level, "%s", msg))?;
        Ok(())
    };
    if dropped > 0 {
        let msg = format!("{dropped} log records of the driver were lost: more than {QUEUE_LIMIT} between two calls");
        if let Err(e) = emit("ttdrv", 30, &msg) {
            e.write_unraisable(py, None);
        }
    }
    for r in records {
        if let Err(e) = emit(&logger_name(&r.target), py_level(r.level), &r.message) {
            e.write_unraisable(py, None);
        }
    }
}
