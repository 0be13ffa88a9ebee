//! A `log` logger that keeps every record in memory, so tests can check what ttdrv logged (and that it logged
//! instead of writing to stderr).

use std::sync::{Mutex, OnceLock};

/// One captured log record.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Its level.
    pub level: log::Level,
    /// Its target (the module that logged it).
    pub target: String,
    /// The formatted message.
    pub message: String,
}

struct Capture(Mutex<Vec<Captured>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, r: &log::Record<'_>) {
        let c = Captured { level: r.level(), target: r.target().to_string(), message: r.args().to_string() };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }

    fn flush(&self) {}
}

static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();

/// Installs the capturing logger for this process (once; later calls return the same logger), at every level.
/// Fails if another logger was installed first.
pub fn install() {
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("another logger is already installed");
        log::set_max_level(log::LevelFilter::Trace);
        c
    });
}

/// Every record captured so far at `level` or more severe.
pub fn records(level: log::Level) -> Vec<Captured> {
    let Some(c) = CAPTURE.get() else { return Vec::new() };
    c.0.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|r| r.level <= level).cloned().collect()
}
