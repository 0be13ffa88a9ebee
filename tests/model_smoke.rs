use ttdrv_testkit::hostref;

use hostref::{decode, encode, mlp_reference};
use ttdrv::device::model::MlpConfig;
use ttdrv::*;

#[test]
fn mlp_eager_and_traced_match_reference() {
    let p = DeviceParams { trace_region_size: 1 << 20, ..Default::default() };
    let dev = Device::open("emu", &p).unwrap();
    let dims = vec![64u32, 96, 32];
    let batch = 32u32;
    let w: Vec<Vec<f32>> = (0..2)
        .map(|l| (0..dims[l] * dims[l + 1]).map(|i| ((i * 7 + l as u32) % 13) as f32 * 0.01 - 0.06).collect())
        .collect();
    let b: Vec<Vec<f32>> = (0..2).map(|l| (0..dims[l + 1]).map(|i| (i % 5) as f32 * 0.1).collect()).collect();
    let cfg = MlpConfig {
        batch,
        dims: dims.clone(),
        dtype: DType::Float32,
        weights_mem: MemoryConfig::DRAM,
        act_mem: MemoryConfig::L1,
        out_mem: MemoryConfig::L1,
        relu_last: true,
    };
    let wr: Vec<&[f32]> = w.iter().map(|v| v.as_slice()).collect();
    let br: Vec<&[f32]> = b.iter().map(|v| v.as_slice()).collect();
    let mlp = dev.mlp(0, &cfg, &wr, &br).unwrap();
    let in_mem = MemoryConfig::sharded(
        BufferType::L1,
        Layout::HeightSharded,
        ShardGrid::Cores { x0: 0, y0: 0, x1: 3, y1: 0 },
        [8, 64],
    );
    let in_spec = BufferSpec::new(batch, 64, DType::Float32, in_mem);
    let x: Vec<f32> = (0..batch * 64).map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8).collect();
    // Compile run.
    let input = dev.buffer_from_host(&in_spec, 0, &encode(&x, DType::Float32)).unwrap();
    let out = mlp.run(0, input).unwrap();
    let got = decode(&out.read_to_vec(0).unwrap(), DType::Float32);
    let want = mlp_reference(&cfg, &w, &b, &x);
    for (g, r) in got.iter().zip(&want) {
        assert!((g - r).abs() <= 1e-4 * (1.0 + r.abs()), "{g} vs {r}");
    }
    // Capture, §1.3.2 style.
    let input = dev.buffer_from_host(&in_spec, 0, &encode(&x, DType::Float32)).unwrap();
    let addr = input.address();
    drop(out);
    let tid = dev.begin_trace_capture(0).unwrap();
    let out = mlp.run(0, input).unwrap();
    let input = dev.allocate(&in_spec).unwrap();
    assert_eq!(input.address(), addr);
    dev.end_trace_capture(tid, 0).unwrap();
    for it in 0..5 {
        let x: Vec<f32> = (0..batch * 64).map(|i| ((i * 31 + it * 7) % 17) as f32 * 0.1 - 0.8).collect();
        input.write(0, &encode(&x, DType::Float32), false).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
        let got = decode(&out.read_to_vec(0).unwrap(), DType::Float32);
        let want = mlp_reference(&cfg, &w, &b, &x);
        for (g, r) in got.iter().zip(&want) {
            assert!((g - r).abs() <= 1e-4 * (1.0 + r.abs()), "iter {it}: {g} vs {r}");
        }
    }
    let info = dev.trace_info(tid).unwrap();
    assert_eq!(info.launches, 6);
    dev.release_trace(tid).unwrap();
}

#[test]
fn profiling_records_host_and_device_spans() {
    let p = DeviceParams { profiling: true, trace_region_size: 1 << 20, ..Default::default() };
    let dev = Device::open("emu:paced", &p).unwrap();
    let spec = BufferSpec::new(64, 64, DType::Float32, MemoryConfig::L1);
    let a = dev.buffer_from_host(&spec, 0, &vec![0u8; spec.host_bytes() as usize]).unwrap();
    let b = dev.unary(0, ttdrv::device::ops::UnaryOp::Relu, &a, &MemoryConfig::L1).unwrap();
    let tid = dev.begin_trace_capture(0).unwrap();
    let c = dev.unary(0, ttdrv::device::ops::UnaryOp::Relu, &b, &MemoryConfig::L1).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    dev.execute_trace(tid, 0, false).unwrap();
    let _ = c.read_to_vec(0).unwrap();
    dev.finish(0).unwrap();
    let spans = dev.profile_spans();
    let dev_names: Vec<&str> =
        spans.iter().filter(|s| matches!(s.lane, ttdrv::profile::Lane::Queue(0))).map(|s| &*s.name).collect();
    assert!(dev_names.contains(&"write"), "{dev_names:?}");
    assert!(dev_names.contains(&"eltwise_unary"), "{dev_names:?}");
    assert!(spans.iter().any(|s| s.cat == "trace"), "{dev_names:?}");
    assert!(dev_names.contains(&"read"), "{dev_names:?}");
    // The replay's inner launch is a span inside the replay's span.
    let tr = spans.iter().find(|s| s.cat == "trace").unwrap();
    assert!(spans.iter().any(|s| &*s.name == "eltwise_unary" && s.start_ns >= tr.start_ns && s.end_ns <= tr.end_ns));
    assert!(spans.iter().any(|s| matches!(s.lane, ttdrv::profile::Lane::Host { .. }) && &*s.name == "dispatch"));
    for s in &spans {
        assert!(s.end_ns >= s.start_ns);
    }
}
