//! The checked-in header is exactly what the pinned cbindgen generates, and its version macros match Cargo.toml.

use std::path::Path;

fn generate() -> Vec<u8> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let cfg = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut out = Vec::new();
    cbindgen::Builder::new().with_crate(dir).with_config(cfg).generate().expect("cbindgen").write(&mut out);
    out
}

#[test]
fn header_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/ttdrv.h");
    let fresh = generate();
    if std::env::var_os("TTDRV_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let current = std::fs::read(&path).unwrap_or_default();
    assert!(current == fresh, "include/ttdrv.h is stale: run scripts/gen-header.sh and commit the result");
}

fn macro_value<'a>(header: &'a str, name: &str) -> &'a str {
    let line = header
        .lines()
        .find(|l| l.starts_with(&format!("#define {name} ")))
        .unwrap_or_else(|| panic!("{name} missing from the header"));
    line[format!("#define {name} ").len()..].trim()
}

#[test]
fn header_version_matches_cargo() {
    let h = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/ttdrv.h")).unwrap();
    assert_eq!(macro_value(&h, "TTDRV_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MAJOR"));
    assert_eq!(macro_value(&h, "TTDRV_VERSION_MINOR"), env!("CARGO_PKG_VERSION_MINOR"));
    assert_eq!(macro_value(&h, "TTDRV_VERSION_PATCH"), env!("CARGO_PKG_VERSION_PATCH"));
    assert_eq!(macro_value(&h, "TTDRV_VERSION_STRING"), format!("\"{}\"", env!("CARGO_PKG_VERSION")));
    // The runtime query agrees too.
    // SAFETY: ttdrv_version returns a pointer to a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(ttdrv_ffi::ttdrv_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

fn header() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/ttdrv.h")).unwrap()
}

/// The header's prose with comment markers and line breaks folded away, so a phrase can be found across lines.
fn prose(header: &str) -> String {
    header.split_whitespace().filter(|w| *w != "*" && *w != "/**" && *w != "*/").collect::<Vec<_>>().join(" ")
}

#[test]
fn header_statuses_are_the_library_statuses() {
    use strum::IntoEnumIterator;
    let h = header();
    let mut seen = 0;
    for line in h.lines() {
        let Some((name, value)) = line.trim().trim_end_matches(',').split_once(" = ") else { continue };
        if !name.starts_with("TTDRV_STATUS_") {
            continue;
        }
        let value: u32 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        // SAFETY: ttdrv_status_name returns a static NUL-terminated string.
        let lib = unsafe { std::ffi::CStr::from_ptr(ttdrv_ffi::ttdrv_status_name(value)) };
        assert_eq!(lib.to_str().unwrap(), name, "the header's {name} = {value} is named differently by the library");
        seen += 1;
    }
    assert_eq!(seen, ttdrv_ffi::ttdrv_status::iter().count(), "every status is in the header once");
}

#[test]
fn header_states_the_real_defaults() {
    let d = ttdrv::DeviceParams::default();
    let text = prose(&header());
    let mib = |b: u32| b >> 20;
    for phrase in [
        format!("{} MiB issue and {} MiB completion rings", mib(d.issue_ring_size), mib(d.completion_ring_size)),
        format!("a {} s timeout", d.timeout.as_secs()),
        format!("Issue ring bytes per queue (power of two, 64 KiB to 1 GiB; default {} MiB)", mib(d.issue_ring_size)),
        format!(
            "Completion ring bytes per queue (power of two, 64 KiB to 1 GiB; default {} MiB)",
            mib(d.completion_ring_size)
        ),
        format!("in milliseconds (default {})", d.timeout.as_millis()),
        format!("Command queues: {} (default)", d.num_command_queues),
    ] {
        assert!(text.contains(&phrase), "the header does not say {phrase:?} (DeviceParams::default())");
    }
    assert!(d.hugepages, "the header says the defaults request hugepages");
}
