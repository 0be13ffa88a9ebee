//! Gives the shared library the SONAME of its ABI version, as a C library has: `libttdrv.so.MAJOR` (for 0.x,
//! `libttdrv.so.0`). The dynamic linker then finds it through the `libttdrv.so.0` symlink `scripts/install.sh`
//! installs, and a later release with the same major version replaces the file without relinking programs
//! (docs/abi.md, "Versions").

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    // ELF platforms only; other linkers have their own install-name mechanisms.
    if os == "linux" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libttdrv.so.{major}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
