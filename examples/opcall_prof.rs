use ttdrv::device::ops::BinaryOp;
use ttdrv::*;
fn main() {
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let a = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1)).unwrap();
    let b = dev.allocate(&BufferSpec::new(1, 256, DType::Float32, MemoryConfig::L1)).unwrap();
    let n: usize = std::env::args().nth(1).map_or(200_000, |s| s.parse().unwrap());
    let t0 = std::time::Instant::now();
    let mut total = 0u128;
    for i in 0..n {
        let t = std::time::Instant::now();
        let o = dev.binary(0, BinaryOp::Add, &a, &b, &MemoryConfig::L1).unwrap();
        total += t.elapsed().as_nanos();
        drop(o);
        if i % 64 == 63 {
            dev.finish(0).unwrap();
        }
    }
    println!("{} ns/call (in call), {:?} total", total / n as u128, t0.elapsed());
}
