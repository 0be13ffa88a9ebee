//! The workspace is the architecture (docs/architecture.md, the root Cargo.toml): each layer is a crate that may
//! only see the crates below it. This test reads the dependency graph from `cargo metadata` and fails when a crate
//! reaches up or sideways, and checks that the library crates carry no command-line or benchmark code and never
//! print (a library logs through `log`).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const CONTRACT: &str = "ttdrv-contract";
const EMU: &str = "ttdrv-emu";
const DRIVER: &str = "ttdrv";
const FFI: &str = "ttdrv-ffi";
const CLI: &str = "ttdrv-cli";
const TESTKIT: &str = "ttdrv-testkit";
const PYTHON: &str = "ttdrv-python";

/// Which workspace crates each workspace crate declares as dependencies, by kind.
#[derive(Default, Debug)]
struct Deps {
    /// `[dependencies]` and `[build-dependencies]`: what the crate itself is compiled against.
    normal: BTreeSet<String>,
    /// `[dev-dependencies]`: only its tests, examples and benchmarks see these.
    dev: BTreeSet<String>,
}

impl Deps {
    fn all(&self) -> BTreeSet<String> {
        self.normal.union(&self.dev).cloned().collect()
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's crates and the workspace crates each depends on, from `cargo metadata`.
fn workspace_graph() -> BTreeMap<String, Deps> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&cargo).display()));
    assert!(
        out.status.success(),
        "`cargo metadata` failed (a dependency cycle between workspace crates fails here too):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let members: BTreeSet<&str> =
        meta["workspace_members"].as_array().expect("workspace_members").iter().filter_map(Value::as_str).collect();
    let packages: Vec<&Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|id| members.contains(id)))
        .collect();
    let names: BTreeSet<String> = packages.iter().filter_map(|p| p["name"].as_str()).map(String::from).collect();
    let mut graph = BTreeMap::new();
    for p in packages {
        let mut deps = Deps::default();
        for d in p["dependencies"].as_array().expect("dependencies") {
            // `name` is the package's name even when the dependency is renamed in Cargo.toml.
            let name = d["name"].as_str().expect("dependency name").to_string();
            if !names.contains(&name) {
                continue;
            }
            match d["kind"].as_str() {
                Some("dev") => deps.dev.insert(name),
                _ => deps.normal.insert(name),
            };
        }
        graph.insert(p["name"].as_str().expect("package name").to_string(), deps);
    }
    graph
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn each_layer_depends_only_on_the_layers_below() {
    let g = workspace_graph();
    for name in [CONTRACT, EMU, DRIVER, FFI, CLI, TESTKIT, PYTHON] {
        assert!(
            g.contains_key(name),
            "{name} is no longer a workspace crate; update this test and docs/architecture.md"
        );
    }
    let fix = "move the code to the layer that owns it (see the root Cargo.toml and docs/architecture.md) rather \
               than adding the dependency";
    let mut problems = Vec::new();
    let mut expect = |ok: bool, msg: String| {
        if !ok {
            problems.push(msg);
        }
    };

    // The hardware contract: the bottom layer, nothing of ours at all (not even for its tests).
    let contract = g[CONTRACT].all();
    expect(contract.is_empty(), format!("{CONTRACT} depends on {contract:?}; it must depend on no crate of ours"));

    // The emulator stands beside the driver and sees only the contract.
    let emu = g[EMU].all();
    expect(
        emu.is_subset(&set(&[CONTRACT])),
        format!("{EMU} depends on {emu:?}; among our crates it may depend only on {CONTRACT}"),
    );

    // The driver: the contract and the emulator; its tests may use the testkit, the library may not.
    let driver = &g[DRIVER];
    for up in [FFI, CLI, TESTKIT] {
        expect(!driver.normal.contains(up), format!("the driver `{DRIVER}` depends on {up}"));
    }
    expect(
        !driver.dev.contains(FFI) && !driver.dev.contains(CLI),
        format!("`{DRIVER}`'s tests depend on the ffi or cli"),
    );

    // The C ABI wraps the driver, never the command.
    let ffi = &g[FFI];
    expect(ffi.normal.contains(DRIVER), format!("{FFI} no longer depends on the driver `{DRIVER}`"));
    expect(!ffi.all().contains(CLI), format!("{FFI} depends on {CLI}"));
    expect(!ffi.normal.contains(TESTKIT), format!("{FFI} (shipped) depends on {TESTKIT} outside its tests"));

    // The Python package wraps the driver's Rust API, not the C ABI, and nothing builds on it.
    let python = &g[PYTHON];
    expect(python.normal.contains(DRIVER), format!("{PYTHON} no longer depends on the driver `{DRIVER}`"));
    for other in [FFI, CLI, TESTKIT] {
        expect(!python.all().contains(other), format!("{PYTHON} depends on {other}"));
    }
    for (name, deps) in &g {
        expect(!deps.all().contains(PYTHON), format!("{name} depends on {PYTHON}, the Python extension"));
    }

    // The command is a leaf: nothing builds on it.
    for (name, deps) in &g {
        expect(!deps.all().contains(CLI), format!("{name} depends on {CLI}, the `ttdrv` command"));
    }

    assert!(problems.is_empty(), "layering broken:\n  {}\n{fix}", problems.join("\n  "));
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The library crates' sources: the driver, the contract, the emulator, the C ABI and the Python extension (not
/// their tests or build scripts).
fn library_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "crates/contract/src", "crates/emu/src", "crates/ffi/src", "python/src"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} library source files; has the layout changed?", files.len());
    files
}

/// Whether `code` contains `word` not preceded by an identifier character (`println!(` is not in `eprintln!(`).
fn mentions(code: &str, word: &str) -> bool {
    code.match_indices(word)
        .any(|(i, _)| !code[..i].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

/// Module names that belong to the command or the benchmarks, not to a library's API.
const CLI_MODULES: &[&str] = &["cli", "tools", "bench", "benches", "demo", "doctor", "args"];

#[test]
fn library_crates_hold_no_command_or_bench_code() {
    let mut problems = Vec::new();
    for f in library_sources() {
        let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let parent = f.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()).unwrap_or("");
        for m in CLI_MODULES {
            if stem == *m || (stem == "mod" && parent == *m) {
                problems.push(format!("{rel}: a `{m}` module in a library crate"));
            }
        }
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            // The one exception: output the user asked for by setting TTDRV_LOG (the C library's stderr fallback
            // when no log callback is installed), marked by a comment naming TTDRV_LOG on the line before.
            let asked = i > 0 && lines[i - 1].trim_start().starts_with("//") && lines[i - 1].contains("TTDRV_LOG");
            for m in CLI_MODULES {
                for decl in [format!("mod {m};"), format!("mod {m} {{")] {
                    if mentions(code, &decl) {
                        problems.push(format!("{rel}:{}: declares `{decl}`", i + 1));
                    }
                }
            }
            // A library never writes to the host application's terminal; it logs through `log`.
            for call in ["println!(", "eprintln!(", "print!(", "eprint!(", "dbg!(", "io::stderr()", "io::stdout()"] {
                if mentions(code, call) && !(asked && call == "io::stderr()") {
                    problems.push(format!("{rel}:{}: `{call}` in a library crate (log through `log` instead)", i + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "command-line code in the library crates:\n  {}", problems.join("\n  "));
}
