//! The saved-trace loader's checks (`ttdrv::device::trace_file`) on arbitrary bytes: nothing may panic (debug
//! assertions and overflow checks are on in fuzz builds), every input is either a trace or an error. Each input is
//! tried twice: as it is (the header checks: magic, version, length, checksum) and with its checksum re-sealed, so
//! the fuzzer reaches the body decoder and the record and address checks, which a crafted file would reach. The
//! checks run against the device shape the file itself claims, so a decodable file's records are all walked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ttdrv::device::trace_file::{HEADER_LEN, TraceFile, crc32};

fn try_load(bytes: &[u8]) {
    if let Ok(f) = TraceFile::decode(bytes) {
        let _ = f.check(f.contract.1, &f.shape, u32::MAX);
        // What decodes encodes to the same file.
        assert_eq!(TraceFile::decode(&f.encode()).as_ref(), Ok(&f));
    }
}

fuzz_target!(|data: &[u8]| {
    try_load(data);
    if data.len() >= HEADER_LEN {
        let mut sealed = data.to_vec();
        let crc = crc32(&sealed[HEADER_LEN..]);
        sealed[24..28].copy_from_slice(&crc.to_le_bytes());
        let len = (sealed.len() - HEADER_LEN) as u64;
        sealed[16..24].copy_from_slice(&len.to_le_bytes());
        try_load(&sealed);
    }
});
