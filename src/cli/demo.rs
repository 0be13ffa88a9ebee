//! `ttdrv demo`: the main job on the emulated device.

use super::args::Args;
use crate::device::model::MlpConfig;
use crate::{BufferSpec, BufferType, DType, Device, DeviceParams, Layout, MemoryConfig, ShardGrid};
use std::time::Instant;

/// Help text of `ttdrv demo`.
pub const HELP: &str = "\
ttdrv demo: move data through the emulated device and run an MLP on it, checking every result.

usage: ttdrv demo [--device SELECTOR] [--mib N]

  --device SELECTOR   device to use (default: emu; see `ttdrv help devices`)
  --mib N             size of the transfer in MiB (default 64)";

/// Runs the demo; returns the process exit code.
pub fn run(argv: &[String]) -> i32 {
    let args = match Args::parse(argv, &["device", "mib"], &[]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ttdrv demo: {e}\n\n{HELP}");
            return 2;
        }
    };
    match demo(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ttdrv demo: {e}");
            1
        }
    }
}

fn demo(args: &Args) -> Result<(), String> {
    let sel = args.value("device").unwrap_or("emu");
    let mib: u32 = args.parse_or("mib", 64)?;
    let dev = Device::open(sel, &DeviceParams::default()).map_err(|e| e.to_string())?;
    println!("device {} (contract {}.{})", dev.info().name, dev.info().version_major, dev.info().version_minor);
    let rows = mib.max(1) * 256;
    let spec = BufferSpec::new(rows, 1024, DType::Float32, MemoryConfig::DRAM);
    let bytes = spec.host_bytes() as usize;
    let data: Vec<u8> = (0..bytes).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let buf = dev.allocate(&spec).map_err(|e| e.to_string())?;
    // Once to touch the device's memory, then measured.
    buf.write(0, &data, true).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    buf.write(0, &data, false).map_err(|e| e.to_string())?;
    let t_call = t0.elapsed();
    dev.finish(0).map_err(|e| e.to_string())?;
    let t_write = t0.elapsed();
    // Pre-faulted destination: a fresh vector would measure page faults, not the device.
    let mut back = vec![0xA5u8; bytes];
    buf.read(0, &mut back).map_err(|e| e.to_string())?;
    back.fill(0);
    let t1 = Instant::now();
    buf.read(0, &mut back).map_err(|e| e.to_string())?;
    let t_read = t1.elapsed();
    if back != data {
        return Err("read-back differs from what was written".into());
    }
    let gbps = |d: std::time::Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!(
        "moved {mib} MiB: write call {:.2} GB/s, write to device {:.2} GB/s, read back {:.2} GB/s; all bytes match",
        gbps(t_call),
        gbps(t_write),
        gbps(t_read)
    );

    let dims = vec![64u32, 128, 128, 64];
    let cfg = MlpConfig {
        batch: 32,
        dims: dims.clone(),
        dtype: DType::Float32,
        weights_mem: MemoryConfig::DRAM,
        act_mem: MemoryConfig::L1,
        out_mem: MemoryConfig::L1,
        relu_last: false,
    };
    let (w, b) = weights(&dims);
    let wr: Vec<&[f32]> = w.iter().map(Vec::as_slice).collect();
    let br: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
    let mlp = dev.mlp(0, &cfg, &wr, &br).map_err(|e| e.to_string())?;
    let in_mem = MemoryConfig::sharded(
        BufferType::L1,
        Layout::HeightSharded,
        ShardGrid::Cores { x0: 0, y0: 0, x1: 3, y1: 0 },
        [8, 64],
    );
    let x: Vec<f32> = (0..32 * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = Instant::now();
    let input =
        dev.buffer_from_host(&BufferSpec::new(32, 64, DType::Float32, in_mem), 0, &xb).map_err(|e| e.to_string())?;
    let out = mlp.run(0, input).map_err(|e| e.to_string())?;
    let got: Vec<f32> = out
        .read_to_vec(0)
        .map_err(|e| e.to_string())?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want = reference(&dims, &w, &b, &x, 32);
    let bad = got.iter().zip(&want).filter(|(g, r)| (*g - *r).abs() > 1e-4 * (1.0 + r.abs())).count();
    if bad > 0 {
        return Err(format!("MLP output: {bad} of {} values differ from the host reference", want.len()));
    }
    println!(
        "MLP {dims:?} batch 32: {} ops in {:.2} ms; all {} outputs match the host reference",
        mlp.ops_per_run(),
        t.elapsed().as_secs_f64() * 1e3,
        want.len()
    );
    Ok(())
}

/// Deterministic weights and biases for the demo MLP.
pub fn weights(dims: &[u32]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut s = 12345u32;
    let mut next = |scale: f32| {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        ((s >> 8) as f32 / 16_777_216.0 * 2.0 - 1.0) * scale
    };
    let mut w = Vec::new();
    let mut b = Vec::new();
    for l in 0..dims.len() - 1 {
        let (k, m) = (dims[l] as usize, dims[l + 1] as usize);
        let scale = 1.0 / (k as f32).sqrt();
        w.push((0..k * m).map(|_| next(scale)).collect());
        b.push((0..m).map(|_| next(0.1)).collect());
    }
    (w, b)
}

/// The MLP computed on the host, independently of the device's kernels.
pub fn reference(dims: &[u32], w: &[Vec<f32>], b: &[Vec<f32>], x: &[f32], batch: usize) -> Vec<f32> {
    let mut a = x.to_vec();
    let layers = dims.len() - 1;
    for l in 0..layers {
        let (k, m) = (dims[l] as usize, dims[l + 1] as usize);
        let mut y = vec![0f32; batch * m];
        for i in 0..batch {
            for j in 0..m {
                let mut acc = 0f32;
                for q in 0..k {
                    acc += a[i * k + q] * w[l][q * m + j];
                }
                acc += b[l][j];
                y[i * m + j] = if l + 1 < layers { acc.max(0.0) } else { acc };
            }
        }
        a = y;
    }
    a
}
