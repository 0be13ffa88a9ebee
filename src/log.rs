//! Diagnostics for conditions the caller cannot see through a return value (a fallback taken, a leak chosen over
//! a crash). Printed to stderr with a `ttdrv:` prefix; `TTDRV_LOG=off` silences them, `TTDRV_LOG=debug` adds
//! debug lines.

use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Off,
    Warn,
    Debug,
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("TTDRV_LOG").as_deref() {
        Ok("off") | Ok("0") | Ok("quiet") => Level::Off,
        Ok("debug") => Level::Debug,
        _ => Level::Warn,
    })
}

/// Prints a warning line.
pub fn warn(msg: &str) {
    if level() >= Level::Warn {
        eprintln!("ttdrv: warning: {msg}");
    }
}

/// Prints a debug line when `TTDRV_LOG=debug`.
pub fn debug(msg: &str) {
    if level() >= Level::Debug {
        eprintln!("ttdrv: debug: {msg}");
    }
}
