//! Tilize and untilize: copies between a dense row-major host tensor and tiles in DMA memory, in the in-tile order of
//! docs/device-interface.md §8.3.2 (32×32 tiles of four 16×16 faces, each face row-major).
//!
//! One routine per direction, one pass over the data: every face row (16 elements) is one copy between the caller's
//! memory and the record or completion payload, so a tiled transfer costs what a row-major one with 16-element rows
//! would. Padding — the part of an edge tile outside the logical shape — is written as zeros on the way in and
//! skipped on the way out. Hand-written because the order is the device's own; no crate knows it.

use ttdrv_contract::kernel::{FACE_DIM, TILE_DIM, TILE_ELEMS, tile_index};

/// A dense row-major host tensor's shape: `rows × cols` elements of `elem` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostShape {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Bytes per element.
    pub elem: usize,
}

impl HostShape {
    /// Bytes of one tile of this element type.
    pub fn tile_bytes(&self) -> usize {
        TILE_ELEMS as usize * self.elem
    }
}

/// Which tiles of a tiled tensor a run of consecutive device pages holds: tiles `first .. first + count` of a
/// row-major walk over a rectangle of the tile grid `width` tiles wide whose top-left tile is (`row0`, `col0`). An
/// interleaved tensor walks its whole grid (its pages are its tiles in that order); a shard walks its own rectangle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileWalk {
    /// Tile row of the rectangle's top-left tile.
    pub row0: u32,
    /// Tile column of the rectangle's top-left tile.
    pub col0: u32,
    /// Tiles per row of the rectangle (at least 1).
    pub width: u32,
    /// Position in the walk of the first tile.
    pub first: u32,
    /// Tiles.
    pub count: u32,
}

impl TileWalk {
    /// Tile row and column of the `k`-th tile of the run.
    #[inline]
    fn tile(&self, k: u32) -> (u32, u32) {
        let i = self.first + k;
        (self.row0 + i / self.width, self.col0 + i % self.width)
    }

    /// Bytes a run of these tiles spans when tile `k` starts at `k × stride`.
    pub fn span(&self, stride: usize, shape: &HostShape) -> usize {
        match self.count {
            0 => 0,
            n => (n as usize - 1) * stride + shape.tile_bytes(),
        }
    }
}

/// One face row of tile (`tr`, `tc`): its host row, first host column, the data elements it holds (0 to 16; the rest
/// is padding) and its element offset inside the tile. Calls `f` for each of the tile's 64 face rows.
#[inline]
fn face_rows(shape: &HostShape, tr: u32, tc: u32, mut f: impl FnMut(u32, u32, u32, usize)) {
    for fy in 0..2 {
        for fx in 0..2 {
            let c0 = tc * TILE_DIM + fx * FACE_DIM;
            let data = shape.cols.saturating_sub(c0).min(FACE_DIM);
            for y in 0..FACE_DIM {
                let r = tr * TILE_DIM + fy * FACE_DIM + y;
                let n = if r < shape.rows { data } else { 0 };
                f(r, c0, n, tile_index(fy * FACE_DIM + y, fx * FACE_DIM) as usize);
            }
        }
    }
}

/// Copies `len` bytes; the two full face-row sizes are fixed-size copies the compiler inlines.
///
/// # Safety
/// As `ptr::copy_nonoverlapping`.
#[inline(always)]
unsafe fn copy_row(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller vouches for both ranges; the fixed-size copies move exactly `len` bytes.
    unsafe {
        match len {
            64 => dst.cast::<[u8; 64]>().write_unaligned(src.cast::<[u8; 64]>().read_unaligned()),
            32 => dst.cast::<[u8; 32]>().write_unaligned(src.cast::<[u8; 32]>().read_unaligned()),
            _ => std::ptr::copy_nonoverlapping(src, dst, len),
        }
    }
}

/// Packs the tiles of `walk` from the dense row-major tensor at `src` into DMA memory at `dst`: tile `k` at
/// `dst + k × stride`, in the in-tile order of §8.3.2, padding and the gaps between tiles written as zeros.
///
/// # Safety
/// `src` must be readable for `shape.rows × shape.cols × shape.elem` bytes; `dst` writable for
/// `walk.span(stride, &shape)` bytes and not overlapping `src`; `stride ≥ shape.tile_bytes()`; every tile of the walk
/// must lie in the tensor's tile grid (`⌈rows / 32⌉ × ⌈cols / 32⌉`).
pub unsafe fn tilize(dst: *mut u8, stride: usize, src: *const u8, shape: HostShape, walk: TileWalk) {
    let es = shape.elem;
    let face_row = FACE_DIM as usize * es;
    let tile_bytes = shape.tile_bytes();
    for k in 0..walk.count {
        let (tr, tc) = walk.tile(k);
        // SAFETY: tile k starts inside `dst`'s span (caller contract).
        let tile = unsafe { dst.add(k as usize * stride) };
        face_rows(&shape, tr, tc, |r, c0, n, at| {
            let n = n as usize * es;
            // SAFETY: the face row is inside tile k; the host row r, columns c0..c0 + n, is inside `src` because n
            // is 0 unless r < rows and c0 + n <= cols.
            unsafe {
                let d = tile.add(at * es);
                if n > 0 {
                    copy_row(src.add((r as usize * shape.cols as usize + c0 as usize) * es), d, n);
                }
                if n < face_row {
                    std::ptr::write_bytes(d.add(n), 0, face_row - n);
                }
            }
        });
        if k + 1 < walk.count && stride > tile_bytes {
            // SAFETY: the gap before tile k + 1 is inside `dst`'s span.
            unsafe { std::ptr::write_bytes(tile.add(tile_bytes), 0, stride - tile_bytes) };
        }
    }
}

/// Unpacks the tiles of `walk` — tile `k` at `src + k × stride`, in the in-tile order of §8.3.2 — into the dense
/// row-major tensor at `dst`, skipping padding.
///
/// # Safety
/// `src` must be readable for `walk.span(stride, &shape)` bytes; `dst` writable for `shape.rows × shape.cols ×
/// shape.elem` bytes and not overlapping `src`; every tile of the walk must lie in the tensor's tile grid.
pub unsafe fn untilize(dst: *mut u8, shape: HostShape, src: *const u8, stride: usize, walk: TileWalk) {
    let es = shape.elem;
    for k in 0..walk.count {
        let (tr, tc) = walk.tile(k);
        // SAFETY: tile k starts inside `src`'s span (caller contract).
        let tile = unsafe { src.add(k as usize * stride) };
        face_rows(&shape, tr, tc, |r, c0, n, at| {
            if n > 0 {
                // SAFETY: the face row is inside tile k; n > 0 only for r < rows and c0 + n <= cols, so the host
                // range is inside `dst`.
                unsafe {
                    copy_row(
                        tile.add(at * es),
                        dst.add((r as usize * shape.cols as usize + c0 as usize) * es),
                        n as usize * es,
                    )
                };
            }
        });
    }
}

/// Where one read's tiles go: untilized into the dense row-major tensor at `dst` (the tiles of `walk`, tile `k` at
/// payload offset `k × src_stride`).
#[derive(Clone, Copy, Debug)]
pub struct TileScatter {
    /// The caller's whole tensor (not the first tile's rows: tiles land wherever their rows are).
    pub dst: *mut u8,
    /// Its shape.
    pub shape: HostShape,
    /// Payload distance between tiles.
    pub src_stride: u32,
    /// The tiles the payload holds.
    pub walk: TileWalk,
}

// SAFETY: the pointer is the caller's destination, which the read API obliges them to keep valid and untouched until
// the read completes; the completer is the only writer.
unsafe impl Send for TileScatter {}

impl TileScatter {
    /// Payload bytes the tiles span.
    pub fn need(&self) -> u64 {
        self.walk.span(self.src_stride as usize, &self.shape) as u64
    }

    /// Untilizes the payload at `src` into place.
    ///
    /// # Safety
    /// `src` must be readable for [`TileScatter::need`] bytes; the destination must be as the read API requires.
    pub unsafe fn deliver(&self, src: *const u8) {
        // SAFETY: forwarded; the walk was planned from the destination's shape.
        unsafe { untilize(self.dst, self.shape, src, self.src_stride as usize, self.walk) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element index inside a tile of (y, x), written out independently of `tile_index`.
    fn faces(y: usize, x: usize) -> usize {
        (y / 16 * 2 + x / 16) * 256 + (y % 16) * 16 + x % 16
    }

    fn tensor(rows: u32, cols: u32, elem: usize) -> Vec<u8> {
        (0..rows as usize * cols as usize * elem).map(|i| (i % 251) as u8 + 1).collect()
    }

    /// Every tile of a [rows, cols] tensor with a gap of `gap` bytes between tiles, tilized in one walk, checked
    /// element by element against the face formula, then untilized back.
    fn round_trip(rows: u32, cols: u32, elem: usize, gap: usize) {
        let shape = HostShape { rows, cols, elem };
        let (tr, tc) = (rows.div_ceil(32), cols.div_ceil(32));
        let walk = TileWalk { row0: 0, col0: 0, width: tc, first: 0, count: tr * tc };
        let stride = shape.tile_bytes() + gap;
        let host = tensor(rows, cols, elem);
        let mut dev = vec![0xEEu8; walk.span(stride, &shape)];
        // SAFETY: `host` and `dev` are the sizes the walk needs.
        unsafe { tilize(dev.as_mut_ptr(), stride, host.as_ptr(), shape, walk) };
        for t in 0..(tr * tc) as usize {
            let (i, j) = (t / tc as usize, t % tc as usize);
            for y in 0..32 {
                for x in 0..32 {
                    let (r, c) = (i * 32 + y, j * 32 + x);
                    let at = t * stride + faces(y, x) * elem;
                    let got = &dev[at..at + elem];
                    if r < rows as usize && c < cols as usize {
                        let h = (r * cols as usize + c) * elem;
                        assert_eq!(got, &host[h..h + elem], "[{rows}, {cols}] element ({r}, {c})");
                    } else {
                        assert!(got.iter().all(|&b| b == 0), "[{rows}, {cols}] padding ({r}, {c}) is not zero");
                    }
                }
            }
            if t + 1 < (tr * tc) as usize {
                let g = &dev[t * stride + shape.tile_bytes()..(t + 1) * stride];
                assert!(g.iter().all(|&b| b == 0), "gap after tile {t}");
            }
        }
        let mut back = vec![0u8; host.len()];
        // SAFETY: as above.
        unsafe { untilize(back.as_mut_ptr(), shape, dev.as_ptr(), stride, walk) };
        assert_eq!(back, host, "[{rows}, {cols}] untilized");
    }

    #[test]
    fn tiles_round_trip_for_aligned_and_padded_shapes() {
        for (rows, cols) in [(32, 32), (64, 96), (1, 1), (33, 17), (50, 70), (31, 65), (5, 200)] {
            for elem in [2, 4] {
                round_trip(rows, cols, elem, 0);
                round_trip(rows, cols, elem, 96);
            }
        }
    }

    /// A shard's walk: the tiles of a rectangle, from a position inside it, land where the grid says.
    #[test]
    fn a_partial_walk_over_a_rectangle_untilizes_only_its_tiles() {
        let shape = HostShape { rows: 96, cols: 100, elem: 2 };
        let host = tensor(96, 100, 2);
        // The rectangle of tile rows 1-2 and tile columns 2-3 (cols 64..100, 36 of them data), from its 2nd tile.
        let walk = TileWalk { row0: 1, col0: 2, width: 2, first: 1, count: 3 };
        let stride = shape.tile_bytes();
        let mut dev = vec![0u8; walk.span(stride, &shape)];
        // SAFETY: sizes as the walk needs.
        unsafe { tilize(dev.as_mut_ptr(), stride, host.as_ptr(), shape, walk) };
        let mut back = vec![0u8; host.len()];
        // SAFETY: as above.
        unsafe { untilize(back.as_mut_ptr(), shape, dev.as_ptr(), stride, walk) };
        // Tiles (1, 3), (2, 2), (2, 3): rows 32..64 cols 96..100, rows 64..96 cols 64..100.
        for r in 0..96usize {
            for c in 0..100usize {
                let inside = (32..64).contains(&r) && c >= 96 || r >= 64 && c >= 64;
                let h = (r * 100 + c) * 2;
                let want = if inside { &host[h..h + 2] } else { &[0u8, 0][..] };
                assert_eq!(&back[h..h + 2], want, "({r}, {c})");
            }
        }
    }
}
