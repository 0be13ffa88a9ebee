//! Copies into DMA memory.
//!
//! Large copies into memory the device will read use non-temporal stores: the data is going to the device, not to
//! this core's cache, and streaming it past the cache is measurably faster than `memcpy` once a copy exceeds the
//! last-level cache (shared/notes/machine-measurements.md: ~37 vs ~27-31 GB/s at 16 MiB).

/// Copies at or above this size stream past the cache.
pub const NT_THRESHOLD: usize = 256 * 1024;

/// Copies `len` bytes from `src` to DMA memory at `dst`, then makes them globally visible (store fence), so a
/// following doorbell write orders after them.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `len` bytes, and the ranges must not overlap.
#[inline]
pub unsafe fn copy_to_dma(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if len >= NT_THRESHOLD && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present; the caller vouches for the ranges.
            unsafe { copy_nt_avx2(dst, src, len) };
            return;
        }
    }
    // SAFETY: the caller vouches for the ranges.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_nt_avx2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::*;
    // Non-temporal stores need 32-byte aligned destinations: copy the unaligned head normally.
    let head = (32 - (dst as usize & 31)) & 31;
    let head = head.min(len);
    // SAFETY: inside the caller's ranges.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, head) };
    let mut off = head;
    while off + 128 <= len {
        // SAFETY: `off + 128 <= len` keeps every access in range; `dst + off` is 32-byte aligned.
        unsafe {
            let s = src.add(off) as *const __m256i;
            let d = dst.add(off) as *mut __m256i;
            let a = _mm256_loadu_si256(s);
            let b = _mm256_loadu_si256(s.add(1));
            let c = _mm256_loadu_si256(s.add(2));
            let e = _mm256_loadu_si256(s.add(3));
            _mm256_stream_si256(d, a);
            _mm256_stream_si256(d.add(1), b);
            _mm256_stream_si256(d.add(2), c);
            _mm256_stream_si256(d.add(3), e);
        }
        off += 128;
    }
    // SAFETY: the tail is inside the caller's ranges; the fence orders the streamed stores before later stores.
    unsafe {
        std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), len - off);
        _mm_sfence();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_size_and_alignment() {
        let src: Vec<u8> = (0..NT_THRESHOLD * 2 + 300).map(|i| (i * 7 + 3) as u8).collect();
        for &len in &[0usize, 1, 31, 33, 129, NT_THRESHOLD - 1, NT_THRESHOLD, NT_THRESHOLD + 77] {
            for dst_off in [0usize, 1, 17, 31] {
                let mut dst = vec![0u8; len + 64];
                // SAFETY: both buffers are large enough and distinct.
                unsafe { copy_to_dma(dst.as_mut_ptr().add(dst_off), src.as_ptr().add(5), len) };
                assert_eq!(&dst[dst_off..dst_off + len], &src[5..5 + len], "len {len} off {dst_off}");
                assert!(dst[..dst_off].iter().all(|&b| b == 0));
                assert!(dst[dst_off + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
