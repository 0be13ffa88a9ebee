//! The Python layer's per-call cost beside the Rust API, measured by `python/bench/bench.py` (its `per_call`), run
//! in the interpreter `--python` names. The script is built into this binary, so the rows are the same whichever
//! directory `ttdrv` runs from; the interpreter needs the ttdrv package (`pip install ./python`) and numpy.
//!
//! Without `--python` the rows say they were not measured: nothing is estimated in their place.

use super::{Api, Bench, Ctx, Kind, RatioOf, Row, Stat, State, Unit};
use std::io::Write;
use std::process::{Command, Stdio};

/// `python/bench/bench.py`, whose `per_call(reps, n)` measures each call from Python and from Rust in one process.
const BENCH_PY: &str = include_str!("../../../../python/bench/bench.py");

/// Loads the script from stdin as a module (so its `main` does not run), calls `per_call` and prints JSON.
const DRIVER: &str = r#"
import json, sys, types
m = types.ModuleType("ttdrv_bench")
exec(compile(sys.stdin.read(), "python/bench/bench.py", "exec"), m.__dict__)
rows = m.per_call(int(sys.argv[1]), int(sys.argv[2]))
print(json.dumps({"ttdrv": m.ttnn.__version__, "python": sys.version.split()[0], "rows": rows}))
"#;

/// The calls `per_call` measures, in its order: (id, figure).
const CALLS: [(&str, &str); 3] = [
    ("python.execute_trace", "execute_trace of a 1-op trace, non-blocking"),
    ("python.add", "op call: add(a, b) -> new tensor, [16, 32]"),
    ("python.write4k", "copy_host_to_device_tensor, 4 KiB"),
];

/// Per-call rows of the Python layer.
pub fn python(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let row = |(id, figure): (&str, &str)| Row::new(id, Bench::Python, figure, Api::Python, State::Hot, Kind::HostCost);
    let Some(py) = &ctx.python else {
        return Ok(CALLS
            .iter()
            .map(|&c| {
                row(c).unit(Unit::Ns).not_available(
                    "not measured: pass --python PATH, a Python with the ttdrv package installed (`python3 -m venv \
                     .venv && .venv/bin/pip install ./python`, then --python .venv/bin/python)",
                )
            })
            .collect());
    };
    let (reps, n) = if ctx.quick { (3, 500) } else { (7, 2000) };
    let mut child = Command::new(py)
        .args(["-c", DRIVER, &reps.to_string(), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}; pass the path of a Python interpreter", py.display()))?;
    child
        .stdin
        .take()
        .ok_or("no stdin for the Python process")?
        .write_all(BENCH_PY.as_bytes())
        .map_err(|e| format!("cannot send python/bench/bench.py to {}: {e}", py.display()))?;
    let out = child.wait_with_output().map_err(|e| format!("{}: {e}", py.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_string();
        let hint = if last.contains("ModuleNotFoundError") {
            "; install the package into that interpreter's environment (`pip install ./python`)"
        } else {
            ""
        };
        return Err(format!("{} failed ({}): {last}{hint}", py.display(), out.status));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{} printed no JSON ({e}): {}", py.display(), String::from_utf8_lossy(&out.stdout)))?;
    let got = v["rows"].as_array().ok_or("the Python bench returned no rows")?;
    if got.len() != CALLS.len() {
        return Err(format!("python/bench/bench.py measured {} calls, this bench knows {}", got.len(), CALLS.len()));
    }
    let mut rows = Vec::new();
    for (c, r) in CALLS.iter().zip(got) {
        let (Some(py_ns), Some(rust_ns)) = (r[1].as_f64(), r[2].as_f64()) else {
            return Err(format!("unexpected row from python/bench/bench.py: {r}"));
        };
        rows.push(
            row(*c)
                .stat(Stat::one(py_ns), Unit::Ns)
                .against("Rust API, same process", rust_ns, RatioOf::FigureOverReference, "Python / Rust")
                .note(format!(
                    "best of {reps} runs of {n} calls (python/bench/bench.py, ttdrv {} on Python {}): the Python \
                     layer adds {:.0} ns per call",
                    v["ttdrv"].as_str().unwrap_or("?"),
                    v["python"].as_str().unwrap_or("?"),
                    py_ns - rust_ns
                )),
        );
    }
    Ok(rows)
}
