//! The completion consumer against a hand-played device.

use super::*;
use ttdrv_contract::RING_OFFSET;

const RING: u32 = 64 * 1024;

#[allow(clippy::single_range_in_vec_init)] // one IOVA window, not a range of indices
fn high_iovas() -> Arc<Mutex<IovaAllocator>> {
    Arc::new(Mutex::new(IovaAllocator::new(&[(3u64 << 30)..(4u64 << 30)], 32)))
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(seed).rotate_left(17) as u8).collect()
}

/// The completer consumes completion entries only below `COMPL_WR`: here the test plays the device on a queue that
/// is never enabled (so the emulator never touches it), writing entries and the `COMPL_WR` word by hand.
#[test]
fn completer_reads_only_below_compl_wr() {
    use std::sync::atomic::AtomicU32;
    use ttdrv_contract::records::{ComplKind, encode_compl};

    let t: Arc<dyn Transport> =
        Arc::new(crate::transport::emulated::EmulatedTransport::new(Default::default()).unwrap());
    let sizes = RingSizes { issue: RING, completion: RING, profile_slots: 0 };
    let opts = MemoryOptions { hugepages: false, ..MemoryOptions::default() };
    let rings = Arc::new(Rings::new(0, &t, &high_iovas(), sizes, &opts).unwrap());
    let base = rings.region().ptr();
    let set_compl_wr = |v: u32| {
        // SAFETY: the COMPL_WR word of the region, 4-byte aligned; only this test writes it (queue not enabled).
        unsafe { AtomicU32::from_ptr(base.add(host::COMPL_WR) as *mut u32) }.store(v, Ordering::Release)
    };
    let put = |off: u32, kind: ComplKind, tag: u32, data: &[u8]| -> u32 {
        let len =
            if kind == ComplKind::Pad { RING - off } else { (PAYLOAD_OFFSET + data.len().div_ceil(64) * 64) as u32 };
        // SAFETY: `[off, off + len)` lies inside the completion ring of the region, which nothing else accesses.
        let mut slot =
            unsafe { RecordSlot::from_raw(base.add(RING_OFFSET + RING as usize + off as usize), len as usize) };
        encode_compl(&mut slot, kind, tag, data.len() as u32);
        slot.put_bytes(PAYLOAD_OFFSET, data);
        len
    };
    let mut c = Completer::new(rings.clone());
    let (p1, p2, p3) = (pattern(100, 1), pattern(3000, 2), pattern(64, 3));
    let mut outs = [vec![0u8; 100], vec![0u8; 3000], vec![0u8; 64]];
    for (i, out) in outs.iter_mut().enumerate() {
        let n = out.len() as u32;
        c.expect(10 + i as u32, Scatter { dst: out.as_mut_ptr(), count: 1, piece: n, src_stride: n, dst_stride: 0 });
    }

    // Two complete entries in the ring, but COMPL_WR covers only the first.
    let e1 = put(0, ComplKind::ReadData, 10, &p1);
    let e2 = put(e1, ComplKind::ReadData, 11, &p2);
    set_compl_wr(e1);
    assert_eq!(c.drain(t.as_ref()).unwrap(), 1);
    assert_eq!(c.delivered(), 1);
    assert_eq!(outs[0], p1);
    assert!(outs[1].iter().all(|&b| b == 0), "read an entry the device had not published");
    assert_eq!(c.drain(t.as_ref()).unwrap(), 0, "nothing new below COMPL_WR");

    // COMPL_WR in the middle of an entry (a broken device): refused, not read past.
    set_compl_wr(e1 + 64);
    let err = c.drain(t.as_ref()).unwrap_err().to_string();
    assert!(err.contains("length"), "{err}");
    assert!(outs[1].iter().all(|&b| b == 0));

    // Published: delivered. Then a PAD to the end of the ring and an entry at its start (wrap-around).
    set_compl_wr(e1 + e2);
    assert_eq!(c.drain(t.as_ref()).unwrap(), 1);
    assert_eq!(outs[1], p2);
    let pad = put(e1 + e2, ComplKind::Pad, 0, &[]);
    let e3 = put(0, ComplKind::ReadData, 12, &p3);
    set_compl_wr(e1 + e2 + pad + e3);
    assert_eq!(c.drain(t.as_ref()).unwrap(), 1);
    assert_eq!(outs[2], p3);
    assert_eq!(c.rd(), RING + e3);
}

/// Enabling a queue clears its completion ring: tags restart at 1 after a reset, so an entry left from before it
/// would carry a tag the next reads use. A device that then claims more than it wrote (COMPL_WR ahead of its
/// entries) exposes only zeroes, which are refused, never old read data.
#[test]
fn enable_clears_entries_left_from_before() {
    use std::sync::atomic::AtomicU32;
    use ttdrv_contract::records::{ComplKind, encode_compl};

    let t: Arc<dyn Transport> =
        Arc::new(crate::transport::emulated::EmulatedTransport::new(Default::default()).unwrap());
    let sizes = RingSizes { issue: RING, completion: RING, profile_slots: 0 };
    let opts = MemoryOptions { hugepages: false, ..MemoryOptions::default() };
    let rings = Arc::new(Rings::new(0, &t, &high_iovas(), sizes, &opts).unwrap());
    let base = rings.region().ptr();
    // An entry for tag 1 from "before the reset".
    let old = pattern(64, 9);
    // SAFETY: the first 128 bytes of the completion ring, which nothing else accesses (queue not enabled yet).
    let mut slot = unsafe { RecordSlot::from_raw(base.add(RING_OFFSET + RING as usize), 128) };
    encode_compl(&mut slot, ComplKind::ReadData, 1, 64);
    slot.put_bytes(PAYLOAD_OFFSET, &old);
    rings.enable(t.as_ref());
    t.write32(regs::queue_reg(0, qreg::CTRL), 0);
    let mut c = Completer::new(rings.clone());
    let mut out = vec![0u8; 64];
    c.expect(1, Scatter { dst: out.as_mut_ptr(), count: 1, piece: 64, src_stride: 64, dst_stride: 0 });
    // The device claims the entry is there.
    // SAFETY: the COMPL_WR word of the region, 4-byte aligned; the queue is disabled, so only this test writes it.
    unsafe { AtomicU32::from_ptr(base.add(host::COMPL_WR) as *mut u32) }.store(128, Ordering::Release);
    let err = c.drain(t.as_ref()).unwrap_err();
    assert!(matches!(err, ProtocolError::EntryLength { length: 0, .. }), "{err}");
    assert!(out.iter().all(|&b| b == 0), "an entry from before the enable was delivered");
}
