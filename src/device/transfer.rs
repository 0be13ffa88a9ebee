//! Host <-> device transfers of buffers: each page goes straight between the caller's memory and the ring, where
//! the buffer's layout says, split into records the rings can hold. Tiled buffers (docs/device-interface.md §8.3.2)
//! are tilized on the way into the record and untilized on the way out of the completion ring (`dma::tile`), in the
//! same single copy: the caller's data stays dense row-major of the logical shape.

use super::buffer::Buffer;
use super::queue::QueueState;
use super::queue::{ReadTicket, expect_read};
use crate::dma::copy::copy_to_dma;
use crate::dma::tile::{HostShape, TileScatter, TileWalk, tilize};
use crate::error::Result;
use crate::queue::{Delivery, Scatter};
use std::sync::atomic::Ordering;
use ttdrv_contract::kernel::{Layout, TILE_DIM, TensorLayout};
use ttdrv_contract::records::{self, Linear, PAYLOAD_OFFSET, Paged, RecordFlags};

/// One piece of a transfer, in the device's terms, and where its bytes are in the caller's dense tensor.
#[derive(Clone, Copy, Debug)]
enum Piece {
    /// Interleaved pages `[start, start + n)`; host bytes are dense rows starting at row `start`.
    Paged { start: u32, n: u32 },
    /// `rows` pieces of `piece` bytes in one unit: device `offset + k × stride`, host `host_off + k × row_bytes`.
    Linear { unit: u16, offset: u64, rows: u32, piece: u32, host_off: u64 },
    /// Tiles of a tiled buffer.
    Tiles(TilePiece),
}

/// One piece of a tiled transfer (contract §8.3.2): the tiles of `walk`, which on the device are either interleaved
/// pages `walk.first ..` (`shard` is `None`: the walk covers the whole tile grid, so its positions are page numbers)
/// or consecutive pages of one shard, at `offset + k × page_stride` in `unit`.
#[derive(Clone, Copy, Debug)]
struct TilePiece {
    shard: Option<(u16, u64)>,
    walk: TileWalk,
}

impl TilePiece {
    /// Payload distance between tiles: packed in a paged record, a page stride apart in a shard's linear range.
    fn stride(&self, b: &Buffer) -> usize {
        match self.shard {
            None => b.host_shape().tile_bytes(),
            Some(_) => b.page_stride as usize,
        }
    }
}

/// The pieces that cover tiled buffer `b`, none with more than `max_bytes` of payload (the smallest rings hold at
/// least three 4 KiB tiles per record, contract §5.1).
fn plan_tiles(b: &Buffer, max_bytes: usize) -> Vec<Piece> {
    let s = &b.spec;
    let tile = b.host_shape().tile_bytes();
    let stride = b.page_stride as usize;
    debug_assert!(tile <= max_bytes, "a {tile}-byte tile does not fit a {max_bytes}-byte record");
    let [pr, pc] = s.padded_shape();
    // The buffer was placed, so its tiles fit device memory and count far below 2^32.
    let (tr, tc) = ((pr / TILE_DIM as u64) as u32, (pc / TILE_DIM as u64) as u32);
    let mut out = Vec::new();
    match s.mem.shard {
        None => {
            let per = (max_bytes / tile).max(1) as u32;
            let total = tr * tc;
            let mut t = 0;
            while t < total {
                let n = per.min(total - t);
                let walk = TileWalk { row0: 0, col0: 0, width: tc, first: t, count: n };
                out.push(Piece::Tiles(TilePiece { shard: None, walk }));
                t += n;
            }
        }
        Some(sh) => {
            let (sr, sc) = (sh.shape[0] / TILE_DIM, sh.shape[1] / TILE_DIM);
            let (rb, cb) = (tr / sr, tc / sc);
            let per = (max_bytes.saturating_sub(tile) / stride + 1) as u32;
            let grid_x = b.dev.info.grid_x as usize;
            for i in 0..rb {
                for j in 0..cb {
                    let pos = if sh.col_major { j * rb + i } else { i * cb + j };
                    let unit = sh.grid.unit(pos as usize, grid_x);
                    let mut p = 0;
                    while p < sr * sc {
                        let n = per.min(sr * sc - p);
                        let walk = TileWalk { row0: i * sr, col0: j * sc, width: sc, first: p, count: n };
                        let offset = b.addr + p as u64 * stride as u64;
                        out.push(Piece::Tiles(TilePiece { shard: Some((unit, offset)), walk }));
                        p += n;
                    }
                }
            }
        }
    }
    out
}

/// The pieces that cover buffer `b`, none with more than `max_bytes` of payload.
fn plan(b: &Buffer, max_bytes: usize) -> Vec<Piece> {
    if b.spec.layout == TensorLayout::Tile {
        return plan_tiles(b, max_bytes);
    }
    let s = &b.spec;
    let es = s.dtype.size() as u64;
    let row_bytes = s.cols as u64 * es;
    let stride = b.page_stride as u64;
    let max = max_bytes as u64;
    let mut out = Vec::new();
    // Splits `rows` rows of `piece` bytes (device stride `stride`) into records within `max`, and rows longer
    // than `max` into column pieces.
    let mut linear = |unit: u16, offset: u64, rows: u32, piece: u64, host_off: u64| {
        if piece > max {
            for k in 0..rows as u64 {
                let mut c = 0;
                while c < piece {
                    let n = (piece - c).min(max);
                    out.push(Piece::Linear {
                        unit,
                        offset: offset + k * stride + c,
                        rows: 1,
                        piece: n as u32,
                        host_off: host_off + k * row_bytes + c,
                    });
                    c += n;
                }
            }
            return;
        }
        let per = (((max - piece) / stride) + 1).max(1) as u32;
        let mut k = 0;
        while k < rows {
            let n = per.min(rows - k);
            out.push(Piece::Linear {
                unit,
                offset: offset + k as u64 * stride,
                rows: n,
                piece: piece as u32,
                host_off: host_off + k as u64 * row_bytes,
            });
            k += n;
        }
    };
    match (s.mem.layout, s.mem.shard) {
        (Layout::Interleaved, _) => {
            let units = b.dev.info.geometry().units(s.mem.buffer_type.memory());
            if row_bytes > max {
                for r in 0..s.rows {
                    let offset = b.addr + (r / units) as u64 * stride;
                    linear((r % units) as u16, offset, 1, row_bytes, r as u64 * row_bytes);
                }
            } else {
                let per = (max / row_bytes).max(1) as u32;
                let mut r = 0;
                while r < s.rows {
                    let n = per.min(s.rows - r);
                    out.push(Piece::Paged { start: r, n });
                    r += n;
                }
            }
        }
        (_, Some(sh)) => {
            let [sr, sc] = sh.shape;
            let (rb, cb) = (s.rows / sr, s.cols / sc);
            let grid_x = b.dev.info.grid_x as usize;
            for i in 0..rb {
                for j in 0..cb {
                    let pos = if sh.col_major { j * rb + i } else { i * cb + j };
                    let unit = sh.grid.unit(pos as usize, grid_x);
                    let host_off = (i * sr) as u64 * row_bytes + (j * sc) as u64 * es;
                    linear(unit, b.addr, sr, sc as u64 * es, host_off);
                }
            }
        }
        (_, None) => unreachable!("sharded buffers always have a shard spec"),
    }
    out
}

impl Buffer {
    /// The host tensor's shape, as the tile routines take it.
    fn host_shape(&self) -> HostShape {
        HostShape { rows: self.spec.rows, cols: self.spec.cols, elem: self.spec.dtype.size() }
    }

    /// The record that moves tile piece `p`: `write` selects the write or the read form.
    fn tile_record(&self, p: &TilePiece, write: bool, slot: &mut records::RecordSlot<'_>, m: records::RecordMeta) {
        let mem = self.spec.mem.buffer_type.memory();
        match p.shard {
            None => {
                let x = Paged {
                    mem,
                    page_size: self.host_shape().tile_bytes() as u32,
                    base: self.addr,
                    page_stride: self.page_stride,
                    start_page: p.walk.first,
                    num_pages: p.walk.count,
                };
                if write { records::encode_write_paged(slot, m, &x) } else { records::encode_read_paged(slot, m, &x) }
            }
            Some((unit, offset)) => {
                let len = p.walk.span(p.stride(self), &self.host_shape()) as u64;
                let x = Linear { mem, unit, offset, len };
                if write { records::encode_write_linear(slot, m, &x) } else { records::encode_read_linear(slot, m, &x) }
            }
        }
    }

    /// Enqueues the write of tile piece `p`, tilizing the caller's dense tensor at `src` into the record.
    ///
    /// # Safety
    /// `src` must be valid for reads of the buffer's host size.
    unsafe fn write_tiles(&self, st: &mut QueueState, src: *const u8, p: TilePiece) -> Result<()> {
        let (shape, stride) = (self.host_shape(), p.stride(self));
        let len = p.walk.span(stride, &shape);
        self.dev.emit(st, records::write_linear_len(len), RecordFlags::empty(), "write", "transfer", |slot, m| {
            self.tile_record(&p, true, slot, m);
            let dst = slot.raw_range(PAYLOAD_OFFSET, len);
            // SAFETY: `src` holds the whole tensor (caller contract) and plan_tiles() walks only its tiles; `dst` is a
            // checked range of the record slot of exactly the walk's span, which the caller's memory cannot overlap.
            unsafe { tilize(dst, stride, src, shape, p.walk) };
            records::pad_payload(slot, len);
        })?;
        Ok(())
    }

    /// Enqueues the read of tile piece `p`; the returned delivery untilizes its data into the dense tensor at `dst`.
    fn read_tiles(&self, st: &mut QueueState, dst: *mut u8, p: TilePiece) -> Result<(u32, Delivery)> {
        let tag = self.dev.emit(st, records::FIXED_LEN, RecordFlags::empty(), "read", "transfer", |slot, m| {
            self.tile_record(&p, false, slot, m)
        })?;
        let shape = self.host_shape();
        Ok((tag, TileScatter { dst, shape, src_stride: p.stride(self) as u32, walk: p.walk }.into()))
    }

    fn check_len(&self, len: usize, what: &'static str) -> Result<()> {
        self.spec.check_host_len(len, what)
    }

    /// Writes the dense row-major tensor `data` into the buffer on queue `cq` (`copy_host_to_device_tensor`).
    /// The data is copied into the ring before this returns, so `data` may be reused at once; with `blocking`
    /// the call also waits until the device has written it.
    pub fn write(&self, cq: u16, data: &[u8], blocking: bool) -> Result<()> {
        self.check_len(data.len(), "write")?;
        // SAFETY: `data` is a live slice of exactly the buffer's size.
        unsafe { self.write_raw(cq, data.as_ptr(), blocking) }
    }

    /// As [`Buffer::write`], from a raw pointer.
    ///
    /// # Safety
    /// `src` must be valid for reads of the buffer's host size ([`super::BufferSpec::host_bytes`]).
    pub unsafe fn write_raw(&self, cq: u16, src: *const u8, blocking: bool) -> Result<()> {
        let dev = &self.dev;
        let _s = dev.span("write", "api");
        let mut st = dev.lock_queue(cq)?;
        st.forbid_capture("host write (copy_host_to_device_tensor)")?;
        let max_payload = st.issuer.as_ref().map_or(0, |i| i.rings().sizes().max_record()) - PAYLOAD_OFFSET;
        let s = self.spec;
        let row_bytes = s.cols as usize * s.dtype.size();
        let mem = s.mem.buffer_type.memory();
        for piece in plan(self, max_payload) {
            match piece {
                Piece::Paged { start, n } => {
                    let x = Paged {
                        mem,
                        page_size: row_bytes as u32,
                        base: self.addr,
                        page_stride: self.page_stride,
                        start_page: start,
                        num_pages: n,
                    };
                    let bytes = n as usize * row_bytes;
                    dev.emit(
                        &mut st,
                        records::write_linear_len(bytes),
                        RecordFlags::empty(),
                        "write",
                        "transfer",
                        |slot, m| {
                            records::encode_write_paged(slot, m, &x);
                            let dst = slot.raw_range(PAYLOAD_OFFSET, bytes);
                            // SAFETY: rows [start, start + n) of the caller's tensor are inside `src`'s extent; `dst`
                            // is a checked range of the record slot, which the caller's memory cannot overlap.
                            unsafe { copy_to_dma(dst, src.add(start as usize * row_bytes), bytes) };
                            records::pad_payload(slot, bytes);
                        },
                    )?;
                }
                Piece::Linear { unit, offset, rows, piece, host_off } => {
                    let stride = self.page_stride as usize;
                    let len = (rows as usize - 1) * stride + piece as usize;
                    let x = Linear { mem, unit, offset, len: len as u64 };
                    dev.emit(
                        &mut st,
                        records::write_linear_len(len),
                        RecordFlags::empty(),
                        "write",
                        "transfer",
                        |slot, m| {
                            records::encode_write_linear(slot, m, &x);
                            for k in 0..rows as usize {
                                let at = PAYLOAD_OFFSET + k * stride;
                                let dst = slot.raw_range(at, piece as usize);
                                // SAFETY: row k of this piece is inside the caller's tensor (plan() derives host_off
                                // from the shape); `dst` is a checked range of the record slot.
                                unsafe { copy_to_dma(dst, src.add(host_off as usize + k * row_bytes), piece as usize) };
                                if k + 1 < rows as usize {
                                    slot.zero(at + piece as usize, stride - piece as usize);
                                }
                            }
                            records::pad_payload(slot, len);
                        },
                    )?;
                }
                // SAFETY: `src` holds the whole tensor (this function's contract).
                Piece::Tiles(p) => unsafe { self.write_tiles(&mut st, src, p)? },
            }
            let (issuer, t) = st.live()?;
            issuer.publish(t.as_ref());
        }
        drop(st);
        if blocking {
            let ev = dev.record_internal(cq, "blocking write")?;
            dev.wait_event(&ev, dev.params.timeout, "blocking write")?;
        }
        Ok(())
    }

    /// Reads the buffer into `out` (dense row-major) on queue `cq`, blocking until the data is there.
    pub fn read(&self, cq: u16, out: &mut [u8]) -> Result<()> {
        self.check_len(out.len(), "read")?;
        // SAFETY: `out` is exclusively borrowed for the whole call, and the call waits for delivery.
        let t = unsafe { self.read_raw(cq, out.as_mut_ptr())? };
        self.dev.wait_read(&t)
    }

    /// Reads the buffer into a new vector, blocking.
    pub fn read_to_vec(&self, cq: u16) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.spec.host_bytes() as usize];
        self.read(cq, &mut v)?;
        Ok(v)
    }

    /// Enqueues a read into `dst` and returns at once (`cpu(blocking=False)`). The data is in place after
    /// [`super::Device::finish`] on `cq`, after an event recorded on `cq` behind the read completes, or after
    /// [`PendingRead::wait`].
    ///
    /// # Safety
    /// `dst` must be valid for writes of the buffer's host size and must not be read or written by anyone else
    /// until the data is in place.
    pub unsafe fn read_nonblocking(&self, cq: u16, dst: *mut u8) -> Result<PendingRead> {
        // SAFETY: forwarded contract.
        let t = unsafe { self.read_raw(cq, dst)? };
        Ok(PendingRead { dev: self.dev.clone(), ticket: t })
    }

    /// # Safety
    /// As [`Buffer::read_nonblocking`].
    unsafe fn read_raw(&self, cq: u16, dst: *mut u8) -> Result<ReadTicket> {
        let dev = &self.dev;
        let _s = dev.span("read", "api");
        let mut st = dev.lock_queue(cq)?;
        st.forbid_capture("host read (cpu)")?;
        let max_read = st.issuer.as_ref().map_or(0, |i| i.rings().sizes().max_read());
        let s = self.spec;
        let row_bytes = s.cols as usize * s.dtype.size();
        let mem = s.mem.buffer_type.memory();
        let compl = &dev.queues[cq as usize].compl;
        let mut seq = 0;
        for piece in plan(self, max_read) {
            let (tag, scatter) = match piece {
                Piece::Paged { start, n } => {
                    let x = Paged {
                        mem,
                        page_size: row_bytes as u32,
                        base: self.addr,
                        page_stride: self.page_stride,
                        start_page: start,
                        num_pages: n,
                    };
                    let tag =
                        dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), "read", "transfer", |slot, m| {
                            records::encode_read_paged(slot, m, &x)
                        })?;
                    let bytes = (n as usize * row_bytes) as u32;
                    // SAFETY: the offset stays inside the caller's destination (plan() derives it from the shape).
                    let dst = unsafe { dst.add(start as usize * row_bytes) };
                    (tag, Scatter { dst, count: 1, piece: bytes, src_stride: bytes, dst_stride: 0 }.into())
                }
                Piece::Linear { unit, offset, rows, piece, host_off } => {
                    let stride = self.page_stride as usize;
                    let len = (rows as usize - 1) * stride + piece as usize;
                    let x = Linear { mem, unit, offset, len: len as u64 };
                    let tag =
                        dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), "read", "transfer", |slot, m| {
                            records::encode_read_linear(slot, m, &x)
                        })?;
                    // SAFETY: the offset stays inside the caller's destination (plan() derives it from the shape).
                    let dst = unsafe { dst.add(host_off as usize) };
                    (tag, Scatter { dst, count: rows, piece, src_stride: stride as u32, dst_stride: row_bytes }.into())
                }
                Piece::Tiles(p) => self.read_tiles(&mut st, dst, p)?,
            };
            // Registered before the doorbell, so the completion can never arrive unexpected.
            seq = expect_read(&st, compl, tag, scatter)?;
            let (issuer, t) = st.live()?;
            issuer.publish(t.as_ref());
        }
        Ok(ReadTicket { queue: cq, seq, epoch: dev.epoch.load(Ordering::Acquire) })
    }
}

/// A read in flight. Dropping it does not cancel the read.
pub struct PendingRead {
    dev: std::sync::Arc<super::DeviceInner>,
    ticket: ReadTicket,
}

impl PendingRead {
    /// Blocks until the data is in place.
    pub fn wait(&self) -> Result<()> {
        let _s = self.dev.span("read wait", "wait");
        self.dev.wait_read(&self.ticket)
    }

    /// True once the data is in place (non-blocking).
    pub fn is_done(&self) -> Result<bool> {
        let t = self.dev.transport()?;
        self.dev.progress(t.as_ref())?;
        let c = self.dev.queues[self.ticket.queue as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|c| c.delivered() >= self.ticket.seq).ok_or_else(|| self.dev.closed_error())
    }
}
