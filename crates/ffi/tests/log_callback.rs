//! The log callback through the exported functions: which thread delivers what and when, levels, re-entry (the
//! callback calls into ttdrv, also to replace itself), and that removing the callback waits for running invocations.
//! One test function, because the callback is process-wide state.

use std::ffi::{CStr, c_char, c_void};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};
use ttdrv_ffi::buffer::*;
use ttdrv_ffi::device::*;
use ttdrv_ffi::logging::*;
use ttdrv_ffi::{ttdrv_debug_panic, ttdrv_last_error, ttdrv_status};

#[derive(Debug, Clone)]
struct Got {
    level: ttdrv_log_level,
    message: String,
    thread: Option<String>,
    thread_id: std::thread::ThreadId,
}

static GOT: Mutex<Vec<Got>> = Mutex::new(Vec::new());

fn take() -> Vec<Got> {
    std::mem::take(&mut *GOT.lock().unwrap())
}

fn record(level: ttdrv_log_level, message: *const c_char, len: usize) {
    // SAFETY: the callback contract: `len` bytes of UTF-8, NUL-terminated.
    let bytes = unsafe { std::slice::from_raw_parts(message as *const u8, len + 1) };
    assert_eq!(bytes[len], 0, "message is not NUL-terminated at message_len");
    let t = std::thread::current();
    GOT.lock().unwrap().push(Got {
        level,
        message: String::from_utf8(bytes[..len].to_vec()).expect("UTF-8"),
        thread: t.name().map(str::to_string),
        thread_id: t.id(),
    });
}

unsafe extern "C" fn collect(userdata: *mut c_void, level: ttdrv_log_level, message: *const c_char, len: usize) {
    assert_eq!(userdata as usize, 0x1234, "userdata comes back unchanged");
    record(level, message, len);
}

fn last_error() -> String {
    // SAFETY: never NULL; valid until the next call on this thread.
    unsafe { CStr::from_ptr(ttdrv_last_error()) }.to_string_lossy().into_owned()
}

/// Logs from a thread that is not inside a ttdrv call, as the emulator's engine threads would.
fn log_from_device_side_thread(level: log::Level, msg: &'static str) {
    std::thread::Builder::new()
        .name("not-a-call".into())
        .spawn(move || log::log!(target: "ttdrv::device_side", level, "{msg}"))
        .unwrap()
        .join()
        .unwrap();
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `f` on another thread and fails (instead of hanging) if it deadlocks.
fn within(secs: u64, what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(secs)).unwrap_or_else(|_| panic!("deadlock: {what}"));
}

fn open_no_hugepages() -> *mut ttdrv_device {
    let mut p = std::mem::MaybeUninit::<ttdrv_device_params>::uninit();
    let mut dev = null_mut();
    // SAFETY: valid pointers to our locals.
    unsafe {
        assert_eq!(ttdrv_device_params_init(p.as_mut_ptr()), ttdrv_status::Ok);
        let mut p = p.assume_init();
        p.flags = TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
        assert_eq!(ttdrv_device_open(c"emu".as_ptr(), &p, &mut dev), ttdrv_status::Ok, "{}", last_error());
    }
    dev
}

/// A full round trip through a device: what a callback that calls into ttdrv does.
fn round_trip() {
    let dev = open_no_hugepages();
    let mut s = ttdrv_tensor_spec::default();
    let mut b = null_mut();
    let data = [1.5f32; 32 * 32];
    let mut out = [0f32; 32 * 32];
    // SAFETY: valid pointers; the buffers hold the sizes passed.
    unsafe {
        assert_eq!(ttdrv_tensor_spec_init(&mut s), ttdrv_status::Ok);
        (s.rows, s.cols) = (32, 32);
        assert_eq!(ttdrv_buffer_allocate(dev, &s, &mut b), ttdrv_status::Ok);
        assert_eq!(ttdrv_buffer_write(b, 0, data.as_ptr().cast(), 4096, false), ttdrv_status::Ok);
        assert_eq!(ttdrv_buffer_read(b, 0, true, out.as_mut_ptr().cast(), 4096), ttdrv_status::Ok);
        assert_eq!(ttdrv_buffer_free(b), ttdrv_status::Ok);
        assert_eq!(ttdrv_device_close(dev), ttdrv_status::Ok);
    }
    assert_eq!(out, data);
}

/// Messages whose delivery called into ttdrv and came back.
static REENTERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn reentered(what: &str) -> bool {
    REENTERED.lock().unwrap().iter().any(|m| m.contains(what))
}

/// Calls into ttdrv for every record, on whichever thread delivers it (the calls' own records, such as a warning of
/// the device they open, are delivered nested, before those calls return).
unsafe extern "C" fn reenter(_: *mut c_void, level: ttdrv_log_level, message: *const c_char, len: usize) {
    record(level, message, len);
    round_trip();
    // A failing call inside the callback: its message is this thread's until the next call.
    // SAFETY: NULL is a valid argument (refused).
    assert_eq!(unsafe { ttdrv_device_params_init(std::ptr::null_mut()) }, ttdrv_status::NullParameter);
    // SAFETY: as in `record`.
    let text = unsafe { std::slice::from_raw_parts(message as *const u8, len) };
    REENTERED.lock().unwrap().push(String::from_utf8_lossy(text).into_owned());
}

static SLOW_RUNNING: AtomicBool = AtomicBool::new(false);

unsafe extern "C" fn slow(_: *mut c_void, level: ttdrv_log_level, message: *const c_char, len: usize) {
    SLOW_RUNNING.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    record(level, message, len);
    SLOW_RUNNING.store(false, Ordering::SeqCst);
}

unsafe extern "C" fn replaces_itself(_: *mut c_void, level: ttdrv_log_level, message: *const c_char, len: usize) {
    record(level, message, len);
    assert_eq!(ttdrv_set_log_callback(Some(collect), 0x1234 as *mut c_void), ttdrv_status::Ok);
}

#[test]
fn log_callback() {
    // Levels: only TTDRV_LOG_LEVEL_* values.
    assert_eq!(ttdrv_set_log_level(6), ttdrv_status::InvalidArgument);
    assert!(last_error().contains("TTDRV_LOG_LEVEL_"), "{}", last_error());
    assert_eq!(ttdrv_set_log_level(ttdrv_log_level::Warn as u32), ttdrv_status::Ok);
    assert_eq!(ttdrv_set_log_callback(Some(collect), 0x1234 as *mut c_void), ttdrv_status::Ok);

    // A record logged inside a call (the panic's, at error level) arrives on the calling thread before it returns;
    // the last error is the panic's even though the record was delivered after the call's work.
    take();
    assert_eq!(ttdrv_debug_panic(), ttdrv_status::Panic);
    let got = take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].level, ttdrv_log_level::Error);
    assert_eq!(got[0].thread_id, std::thread::current().id(), "delivered on another thread: {got:?}");
    assert!(got[0].message.contains("ttdrv_debug_panic was called") && got[0].message.contains("boundary.rs:"));
    assert_eq!(got[0].message, last_error(), "the log and the last error carry the same message");

    // A record logged on a thread no call is on is delivered by ttdrv's delivery thread.
    log_from_device_side_thread(log::Level::Warn, "from the device side");
    wait_for("the delivery thread", || GOT.lock().unwrap().iter().any(|g| g.message == "from the device side"));
    let got = take();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].thread.as_deref(), Some("ttdrv-log"), "{got:?}");
    assert_eq!(got[0].level, ttdrv_log_level::Warn);

    // Below the level: not delivered. Other crates' records are not ttdrv's.
    log_from_device_side_thread(log::Level::Info, "too verbose");
    std::thread::spawn(|| log::error!(target: "someone_else", "not ttdrv's")).join().unwrap();
    assert_eq!(ttdrv_set_log_level(ttdrv_log_level::Info as u32), ttdrv_status::Ok);
    log_from_device_side_thread(log::Level::Info, "verbose enough now");
    wait_for("the info record", || GOT.lock().unwrap().iter().any(|g| g.message == "verbose enough now"));
    let got = take();
    assert_eq!(got.len(), 1, "only the record at the level arrives: {got:?}");
    assert_eq!(ttdrv_set_log_level(ttdrv_log_level::Warn as u32), ttdrv_status::Ok);

    // The callback may call into ttdrv, on the calling thread and on the delivery thread, without deadlock; calls
    // it makes leave the outer call's status and message alone.
    within(60, "re-entering callback", || {
        assert_eq!(ttdrv_set_log_callback(Some(reenter), null_mut()), ttdrv_status::Ok);
        assert_eq!(ttdrv_debug_panic(), ttdrv_status::Panic);
        assert!(reentered("ttdrv_debug_panic was called"), "the callback's work was not done before the call returned");
        assert!(last_error().contains("ttdrv_debug_panic was called"), "{}", last_error());
        log_from_device_side_thread(log::Level::Warn, "re-enter from the delivery thread");
        wait_for("the delivery thread's re-entry", || reentered("re-enter from the delivery thread"));
    });
    take();

    // Replacing the callback from inside the callback does not deadlock, and takes effect.
    within(30, "callback replacing itself", || {
        assert_eq!(ttdrv_set_log_callback(Some(replaces_itself), null_mut()), ttdrv_status::Ok);
        assert_eq!(ttdrv_debug_panic(), ttdrv_status::Panic);
        assert_eq!(ttdrv_debug_panic(), ttdrv_status::Panic);
    });
    assert_eq!(take().len(), 2, "the replacement got the second record");

    // Removing the callback waits for an invocation still running on the delivery thread, so the caller may free
    // what the callback uses as soon as it returns.
    assert_eq!(ttdrv_set_log_callback(Some(slow), null_mut()), ttdrv_status::Ok);
    log_from_device_side_thread(log::Level::Warn, "slow one");
    wait_for("the slow callback to start", || SLOW_RUNNING.load(Ordering::SeqCst));
    assert_eq!(ttdrv_set_log_callback(None, null_mut()), ttdrv_status::Ok);
    assert!(!SLOW_RUNNING.load(Ordering::SeqCst), "ttdrv_set_log_callback(NULL) returned while the callback ran");
    assert_eq!(take().len(), 1);

    // Without a callback, nothing is delivered anywhere (stderr only with TTDRV_LOG, which this test does not set).
    assert_eq!(ttdrv_debug_panic(), ttdrv_status::Panic);
    log_from_device_side_thread(log::Level::Error, "nobody listens");
    std::thread::sleep(Duration::from_millis(50));
    assert!(take().is_empty());
}
