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
