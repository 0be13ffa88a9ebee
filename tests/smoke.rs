use ttdrv::*;

#[test]
fn write_read_dram_roundtrip() {
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let spec = BufferSpec::new(100, 37, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let data: Vec<u8> = (0..spec.host_bytes()).map(|i| (i * 31 % 251) as u8).collect();
    b.write(0, &data, false).unwrap();
    let out = b.read_to_vec(0).unwrap();
    assert_eq!(out, data);
    dev.finish(0).unwrap();
}
