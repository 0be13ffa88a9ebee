//! Gives the shared library the SONAME of its ABI version, as a C library has: `libttdrv.so.MAJOR` (for 0.x,
//! `libttdrv.so.0`). The dynamic linker then finds it through the `libttdrv.so.0` symlink `scripts/install.sh`
//! installs, and a later release with the same major version replaces the file without relinking programs
//! (docs/abi.md, "Versions").
//!
//! The crate's own artifacts are `libttdrv_ffi.so` and `libttdrv_ffi.a` (the crate is `ttdrv_ffi` so that Rust code
//! can call it; `ttdrv` is the driver crate). So that C programs link the build tree exactly as they link an
//! install (`-lttdrv`, then load `libttdrv.so.0`), this script also leaves `libttdrv.so`, `libttdrv.so.MAJOR` and
//! `libttdrv.a` symlinks beside them in the profile directory (`target/release`, `target/debug`). They point at
//! files cargo writes after this script runs, so they dangle only until the first link finishes.

use std::path::{Path, PathBuf};

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // ELF platforms only; other linkers have their own install-name mechanisms.
    if os == "linux" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libttdrv.so.{major}");
        if let Some(dir) = profile_dir() {
            for (link, target) in [
                ("libttdrv.so".to_string(), "libttdrv_ffi.so"),
                (format!("libttdrv.so.{major}"), "libttdrv_ffi.so"),
                ("libttdrv.a".to_string(), "libttdrv_ffi.a"),
            ] {
                symlink(&dir, &link, target);
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// The profile directory the artifacts land in: OUT_DIR is `<profile dir>/build/<crate>-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let dir = out.ancestors().nth(3)?.to_path_buf();
    dir.join("build").is_dir().then_some(dir)
}

fn symlink(dir: &Path, link: &str, target: &str) {
    let path = dir.join(link);
    if std::fs::read_link(&path).is_ok_and(|t| t == Path::new(target)) {
        return;
    }
    let _ = std::fs::remove_file(&path);
    if let Err(e) = std::os::unix::fs::symlink(target, &path) {
        println!("cargo:warning=cannot create {}: {e}", path.display());
    }
}
