//! The driver against a device that writes fuzzer-chosen values into every device-written word: the registers read
//! at open and while waiting, the words of each queue's host region (`ISSUE_RD`, `COMPL_WR`, `EVENT_DONE`,
//! `RETIRED`, `LAST_TAG`) and every field of every completion entry header; the same bytes choose the calls made
//! (writes, blocking and owned reads, finishes, events, fills, resets). The model and the checks are
//! `ttdrv_testkit::lying` (crates/testkit/src/lying.rs): no panic, no access outside the buffers involved
//! (AddressSanitizer on the heap; a successful read must return exactly what was written, so a copy from outside an
//! entry shows), every error `Protocol`, `Timeout` or `DeviceFault` (or `ContentsUndefined` after a reset), and close
//! returns OK.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ttdrv_testkit::lying::run(data);
});
