use ttdrv::*;
fn main() {
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let n: usize = std::env::args().nth(1).map_or(100_000, |s| s.parse().unwrap());
    let spec = BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1);
    let _keep: Vec<Buffer> = (0..8).map(|_| dev.allocate(&spec).unwrap()).collect();
    let t0 = std::time::Instant::now();
    for _ in 0..n {
        let o = dev.allocate(&spec).unwrap();
        std::hint::black_box(&o);
        drop(o);
    }
    println!("{:.1} ns per allocate+drop", t0.elapsed().as_nanos() as f64 / n as f64);
}
