//! The boundary every entry point runs inside (`guard`): panics are caught and become `TTDRV_STATUS_PANIC`, errors
//! become a status and the thread's message, and log records the call produced are delivered to the log callback
//! before it returns (crate::logging).
//!
//! A caught panic is an error like any other: its message goes to the log (error level) and to the last error, never
//! to stderr. Rust's default panic hook would print it with a backtrace, so the first call installs a hook that stays
//! silent for panics raised inside a ttdrv C call on the panicking thread (the thread-local depth `guard` keeps)
//! and hands every other panic — in the host program, or on a thread of ttdrv's that no call is waiting for — to the
//! hook that was installed before.

use super::error::{FfiResult, clear_last_error, set_last_error, ttdrv_status};
use super::logging;
use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    /// How many ttdrv C calls this thread is inside (more than one when a log callback calls back into ttdrv, or an
    /// entry point calls another). `const` and without a destructor, so it works in thread-exit destructors too.
    static CALL_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the current call's panic was raised, and its backtrace when `RUST_BACKTRACE` asks for one: the silent
    /// hook records them for the message and the log.
    static PANIC_SITE: RefCell<Option<(String, Option<String>)>> = const { RefCell::new(None) };
}

/// Whether the calling thread is inside a ttdrv C call.
pub(crate) fn in_call() -> bool {
    CALL_DEPTH.with(|d| d.get() > 0)
}

static INIT: Once = Once::new();

/// Process-wide set-up, done by the first call: the panic hook and the logger.
fn init() {
    INIT.call_once(|| {
        install_panic_hook();
        logging::install();
    });
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if in_call() {
            let site = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_else(|| "?".into());
            let bt = Backtrace::capture();
            let bt = (bt.status() == BacktraceStatus::Captured).then(|| bt.to_string());
            let _ = PANIC_SITE.try_with(|s| *s.borrow_mut() = Some((site, bt)));
        } else {
            previous(info);
        }
    }));
}

/// Marks the calling thread as inside a C call until dropped, also when the call unwinds.
struct CallScope;

impl CallScope {
    fn enter() -> CallScope {
        CALL_DEPTH.with(|d| d.set(d.get() + 1));
        CallScope
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        CALL_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs entry point `name`: catches panics, maps errors to a status and records the thread's message, and delivers
/// the log records the call produced to the log callback before returning.
pub(crate) fn guard(name: &str, f: impl FnOnce() -> FfiResult) -> ttdrv_status {
    init();
    let scope = CallScope::enter();
    let outcome = catch_unwind(AssertUnwindSafe(f));
    let (status, message) = match outcome {
        Ok(Ok(())) => (ttdrv_status::Ok, None),
        Ok(Err(e)) => {
            let (s, m) = e.report(name);
            (s, Some(m))
        }
        Err(payload) => {
            let (site, backtrace) = PANIC_SITE.try_with(|s| s.borrow_mut().take()).ok().flatten().unzip();
            let m = format!(
                "{name}: internal error in ttdrv (a panic at {}: {}); do not rely on the state of the objects this \
                 call used. Please report it with this message",
                site.as_deref().unwrap_or("an unknown place"),
                panic_text(&*payload)
            );
            // Logged inside the call, so it is delivered to the callback before the call returns.
            log::error!(target: "ttdrv_ffi", "{m}");
            if let Some(bt) = backtrace.flatten() {
                log::debug!(target: "ttdrv_ffi", "backtrace of the panic in {name}:\n{bt}");
            }
            // A payload whose destructor panics must not unwind out of here.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            (ttdrv_status::Panic, Some(m))
        }
    };
    drop(scope);
    if !in_call() {
        // Delivered before the message is stored: the callback may call into ttdrv, and those calls set and clear
        // this thread's message. A callback cannot unwind (it is a C function), but the delivery code is Rust.
        let _ = catch_unwind(logging::deliver_pending);
    }
    match message {
        None => clear_last_error(),
        Some(m) => set_last_error(&m),
    }
    status
}

/// Panics inside an entry point on purpose, to prove the panic boundary: returns TTDRV_STATUS_PANIC with a message
/// naming the panic and where it was raised, which also goes to the log at error level (nothing is printed to stderr),
/// and ttdrv stays usable. For tests; it changes nothing else. Thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_debug_panic() -> ttdrv_status {
    guard("ttdrv_debug_panic", || panic!("ttdrv_debug_panic was called"))
}
