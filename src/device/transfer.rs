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

/// Largest payload of one transfer record. A larger transfer is split so that the host and the device work at the
/// same time: the host copies piece n+1 into the ring (a write) or piece n out of the completion ring (a read)
/// while the device handles the other — one record per piece, each published (a write) or retired (a read) on its
/// own, so the time of a large transfer is about one copy plus one piece instead of two full copies. Small enough
/// for a piece to stay in the shared last-level cache between the host's copy and the device's, large enough that
/// the per-record cost (a 64-byte header, a doorbell, the device-written words) stays under 1 % of the copy.
pub(crate) const PIPELINE_PIECE: usize = 128 << 10;

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
    ///
    /// A write is split into records the ring can hold. If one cannot be enqueued (the ring stayed full for the
    /// device's timeout, the device faulted or broke the contract), the write stops: when nothing was enqueued the
    /// error is the cause itself and the buffer is untouched; otherwise it is [`crate::Error::WriteStopped`],
    /// which says how many records and bytes were enqueued (they will land unless the device is reset), and the
    /// buffer's contents are undefined ([`Buffer::contents`] is [`super::Contents::PartialWrite`], reads fail with
    /// [`crate::Error::ContentsUndefined`]) until it is written whole again.
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
        // The epoch the records belong to: a reset (which takes every queue lock) cannot slip in while we hold it.
        let epoch = dev.epoch.load(Ordering::Acquire);
        let max_payload =
            (st.issuer.as_ref().map_or(0, |i| i.rings().sizes().max_record()) - PAYLOAD_OFFSET).min(PIPELINE_PIECE);
        let s = self.spec;
        let row_bytes = s.cols as usize * s.dtype.size();
        let mem = s.mem.buffer_type.memory();
        let pieces = plan(self, max_payload);
        let total: u64 = pieces.iter().map(|p| self.piece_bytes(p)).sum();
        let mut enqueued = Progress { records: 0, bytes: 0 };
        for piece in &pieces {
            let r = match *piece {
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
                    )
                    .map(|_| bytes as u64)
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
                    )
                    .map(|_| rows as u64 * piece as u64)
                }
                // SAFETY: `src` holds the whole tensor (this function's contract).
                Piece::Tiles(p) => unsafe { self.write_tiles(&mut st, src, p) }.map(|()| self.piece_bytes(piece)),
            };
            match r {
                Ok(bytes) => {
                    enqueued.records += 1;
                    enqueued.bytes += bytes;
                    let (issuer, t) = st.live()?;
                    issuer.publish(t.as_ref());
                }
                // Nothing enqueued: the buffer is as it was.
                Err(e) if enqueued.records == 0 => return Err(e),
                Err(e) => {
                    self.contents.mark_partial(epoch, cq, enqueued.bytes, total);
                    return Err(self.write_stopped(cq, enqueued, pieces.len(), total, e));
                }
            }
        }
        self.contents.mark_written(epoch);
        drop(st);
        if blocking {
            let r = dev
                .record_internal(cq, "blocking write")
                .and_then(|ev| dev.wait_event(&ev, dev.params.timeout, "blocking write"));
            if let Err(e) = r {
                return Err(self.write_stopped(cq, enqueued, pieces.len(), total, e));
            }
        }
        Ok(())
    }

    /// Bytes of the tensor a piece carries: rows of a row-major buffer, whole tiles (padding included) of a tiled
    /// one.
    fn piece_bytes(&self, p: &Piece) -> u64 {
        let row_bytes = self.spec.cols as u64 * self.spec.dtype.size() as u64;
        match *p {
            Piece::Paged { n, .. } => n as u64 * row_bytes,
            Piece::Linear { rows, piece, .. } => rows as u64 * piece as u64,
            Piece::Tiles(t) => t.walk.count as u64 * self.host_shape().tile_bytes() as u64,
        }
    }

    fn write_stopped(&self, cq: u16, done: Progress, records: usize, total: u64, cause: crate::Error) -> crate::Error {
        crate::Error::WriteStopped {
            spec: self.spec,
            queue: cq,
            records_enqueued: done.records,
            records_total: records as u32,
            bytes_enqueued: done.bytes,
            bytes_total: total,
            cause: Box::new(cause),
        }
    }

    /// Reads the buffer into `out` (dense row-major) on queue `cq`, blocking until the data is there.
    ///
    /// If the read fails — it cannot be enqueued whole, or its data does not arrive within the device's timeout —
    /// it is cancelled before this returns: data arriving later goes nowhere, so `out` is the caller's again
    /// whatever the result. A buffer whose contents are undefined ([`Buffer::contents`]) is not read: the call
    /// fails with [`crate::Error::ContentsUndefined`].
    pub fn read(&self, cq: u16, out: &mut [u8]) -> Result<()> {
        self.check_len(out.len(), "read")?;
        self.check_contents("read")?;
        // SAFETY: `out` is exclusively borrowed for the whole call; the guard cancels the read before the borrow
        // ends unless the data has been delivered, so nothing writes `out` after this returns.
        let t = unsafe { self.read_raw(cq, out.as_mut_ptr())? };
        let guard = CancelOnDrop { dev: &self.dev, ticket: t };
        self.dev.wait_read(&guard.ticket, self.dev.params.timeout)?;
        std::mem::forget(guard);
        Ok(())
    }

    /// Reads the buffer into a new vector, blocking (as [`Buffer::read`]).
    pub fn read_to_vec(&self, cq: u16) -> Result<Vec<u8>> {
        let mut v = vec![0u8; self.spec.host_bytes() as usize];
        self.read(cq, &mut v)?;
        Ok(v)
    }

    /// Enqueues a read into `dst` and returns at once (`cpu(blocking=False)`), safely: the read owns `dst` until
    /// the data is in place. [`OwnedRead::wait`] gives it back filled; dropping the [`OwnedRead`] cancels the read
    /// and frees `dst` (after the cancellation, so nothing writes it once freed); leaking it (`mem::forget`) leaks
    /// `dst` too, which the device may still write. `dst` must be the buffer's host size.
    pub fn read_owned(&self, cq: u16, mut dst: Vec<u8>) -> Result<OwnedRead> {
        self.check_len(dst.len(), "read")?;
        self.check_contents("read")?;
        // The vector's storage stays where it is while the read owns it: its parts are kept raw (not as a Vec,
        // whose uniqueness a move would assert) and rebuilt once nothing can write them.
        let ptr = dst.as_mut_ptr();
        let (len, cap) = (dst.len(), dst.capacity());
        std::mem::forget(dst);
        // SAFETY: `ptr` holds `len` == host size bytes, owned by the OwnedRead built below, which frees them only
        // after the read is delivered or cancelled.
        match unsafe { self.read_raw(cq, ptr) } {
            Ok(ticket) => Ok(OwnedRead { dev: self.dev.clone(), ticket, ptr, len, cap, done: false }),
            Err(e) => {
                // SAFETY: read_raw cancelled whatever it enqueued before failing; the parts are the vector's.
                drop(unsafe { Vec::from_raw_parts(ptr, len, cap) });
                Err(e)
            }
        }
    }

    /// Enqueues a read into `dst` and returns at once (`cpu(blocking=False)`). The data is in place after
    /// [`super::Device::finish`] on `cq`, after an event recorded on `cq` behind the read completes, or after
    /// [`PendingRead::wait`]. A wait that times out leaves the read pending. Dropping the [`PendingRead`] does not
    /// cancel it (the C ABI's non-blocking reads work this way); [`PendingRead::cancel`] does.
    ///
    /// # Safety
    /// `dst` must be valid for writes of the buffer's host size and must not be read or written by anyone else
    /// until the data is in place, the read is cancelled ([`PendingRead::cancel`]), or the device is reset or
    /// closed: until one of those returns, the driver may write `dst` at any time, from any thread that waits on
    /// the device. [`Buffer::read_owned`] is the safe form.
    pub unsafe fn read_nonblocking(&self, cq: u16, dst: *mut u8) -> Result<PendingRead> {
        self.check_contents("read")?;
        // SAFETY: forwarded contract.
        let t = unsafe { self.read_raw(cq, dst)? };
        Ok(PendingRead { dev: self.dev.clone(), ticket: t })
    }

    /// Enqueues the records of a read into `dst`. If it fails part-way, the records already enqueued are
    /// cancelled before it returns, so `dst` is never written.
    ///
    /// # Safety
    /// As [`Buffer::read_nonblocking`].
    unsafe fn read_raw(&self, cq: u16, dst: *mut u8) -> Result<ReadTicket> {
        let dev = &self.dev;
        let _s = dev.span("read", "api");
        let mut st = dev.lock_queue(cq)?;
        st.forbid_capture("host read (cpu)")?;
        let epoch = dev.epoch.load(Ordering::Acquire);
        let max_read = st.issuer.as_ref().map_or(0, |i| i.rings().sizes().max_read()).min(PIPELINE_PIECE);
        let s = self.spec;
        let row_bytes = s.cols as usize * s.dtype.size();
        let mem = s.mem.buffer_type.memory();
        let compl = &dev.queues[cq as usize].compl;
        let mut seqs: Option<(u64, u64)> = None;
        for piece in plan(self, max_read) {
            let r = match piece {
                Piece::Paged { start, n } => {
                    let x = Paged {
                        mem,
                        page_size: row_bytes as u32,
                        base: self.addr,
                        page_stride: self.page_stride,
                        start_page: start,
                        num_pages: n,
                    };
                    let bytes = (n as usize * row_bytes) as u32;
                    // SAFETY: the offset stays inside the caller's destination (plan() derives it from the shape).
                    let dst = unsafe { dst.add(start as usize * row_bytes) };
                    dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), "read", "transfer", |slot, m| {
                        records::encode_read_paged(slot, m, &x)
                    })
                    .map(|tag| (tag, Scatter { dst, count: 1, piece: bytes, src_stride: bytes, dst_stride: 0 }.into()))
                }
                Piece::Linear { unit, offset, rows, piece, host_off } => {
                    let stride = self.page_stride as usize;
                    let len = (rows as usize - 1) * stride + piece as usize;
                    let x = Linear { mem, unit, offset, len: len as u64 };
                    // SAFETY: the offset stays inside the caller's destination (plan() derives it from the shape).
                    let dst = unsafe { dst.add(host_off as usize) };
                    dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), "read", "transfer", |slot, m| {
                        records::encode_read_linear(slot, m, &x)
                    })
                    .map(|tag| {
                        let s = Scatter { dst, count: rows, piece, src_stride: stride as u32, dst_stride: row_bytes };
                        (tag, s.into())
                    })
                }
                Piece::Tiles(p) => self.read_tiles(&mut st, dst, p),
            };
            // Registered before the doorbell, so the completion can never arrive unexpected.
            let r = r.and_then(|(tag, scatter)| expect_read(&st, compl, tag, scatter));
            match r {
                Ok(seq) => {
                    seqs = Some((seqs.map_or(seq, |s| s.0), seq));
                    let (issuer, t) = st.live()?;
                    issuer.publish(t.as_ref());
                }
                Err(e) => {
                    if let Some((first, last)) = seqs {
                        // We hold the queue lock, so no reset ran since `epoch`: these are this read's records.
                        dev.cancel_read(&ReadTicket { queue: cq, first, last, epoch });
                    }
                    return Err(e);
                }
            }
        }
        // plan() gives at least one piece for every (non-empty) buffer.
        let (first, last) = seqs.unwrap_or((0, 0));
        Ok(ReadTicket { queue: cq, first, last, epoch })
    }
}

/// Records and bytes of a write enqueued so far.
#[derive(Clone, Copy)]
struct Progress {
    records: u32,
    bytes: u64,
}

/// Cancels a read when dropped (on an error or an unwind out of a blocking read).
struct CancelOnDrop<'a> {
    dev: &'a std::sync::Arc<super::DeviceInner>,
    ticket: ReadTicket,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.dev.cancel_read(&self.ticket);
    }
}

/// A read in flight into memory the caller keeps valid ([`Buffer::read_nonblocking`]). Dropping it does not
/// cancel the read.
pub struct PendingRead {
    dev: std::sync::Arc<super::DeviceInner>,
    ticket: ReadTicket,
}

impl PendingRead {
    /// Blocks until the data is in place, for at most the device's timeout. A timeout leaves the read pending
    /// (the destination stays registered): wait again, [`PendingRead::cancel`] it, or reset or close the device.
    pub fn wait(&self) -> Result<()> {
        let _s = self.dev.span("read wait", "wait");
        self.dev.wait_read(&self.ticket, self.dev.params.timeout)
    }

    /// True once the data is in place (non-blocking).
    pub fn is_done(&self) -> Result<bool> {
        self.dev.read_done(&self.ticket)
    }

    /// Cancels the read if it is not delivered yet: once this returns, nothing is written to its destination
    /// (its completion entries are still consumed when the device writes them).
    pub fn cancel(&self) {
        self.dev.cancel_read(&self.ticket);
    }
}

/// A read in flight that owns its destination ([`Buffer::read_owned`]): safe to drop or leak at any time.
pub struct OwnedRead {
    dev: std::sync::Arc<super::DeviceInner>,
    ticket: ReadTicket,
    // The destination vector's raw parts; rebuilt and freed (or returned) only once nothing can write them.
    ptr: *mut u8,
    len: usize,
    cap: usize,
    /// Delivered (so dropping needs no cancellation).
    done: bool,
}

// SAFETY: the destination is owned heap memory; the only other writer is the completer, which writes it under the
// completion lock and never after cancellation, so moving the owner to another thread is sound.
unsafe impl Send for OwnedRead {}

impl std::fmt::Debug for OwnedRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OwnedRead(queue {}, {} bytes)", self.ticket.queue, self.len)
    }
}

impl OwnedRead {
    /// Blocks until the data is in place (at most the device's timeout) and returns the destination, filled. On
    /// failure the read is cancelled and its destination freed.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        {
            let _s = self.dev.span("read wait", "wait");
            self.dev.wait_read(&self.ticket, self.dev.params.timeout)?;
        }
        self.done = true;
        Ok(self.take())
    }

    /// True once the data is in place (non-blocking).
    pub fn is_done(&mut self) -> Result<bool> {
        let d = self.dev.read_done(&self.ticket)?;
        self.done |= d;
        Ok(d)
    }

    /// Cancels the read and returns the destination, whose contents are unspecified (partly delivered, perhaps).
    pub fn cancel(mut self) -> Vec<u8> {
        self.dev.cancel_read(&self.ticket);
        self.done = true;
        self.take()
    }

    /// The destination, once nothing can write it; leaves `self` empty.
    fn take(&mut self) -> Vec<u8> {
        let (ptr, len, cap) = (self.ptr, self.len, self.cap);
        self.len = 0;
        self.cap = 0;
        self.ptr = std::ptr::null_mut();
        // SAFETY: the parts came from a Vec<u8> (read_owned) and are taken once (`ptr` is nulled); the caller
        // established that the read is delivered or cancelled.
        unsafe { Vec::from_raw_parts(ptr, len, cap) }
    }
}

impl Drop for OwnedRead {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        if !self.done {
            self.dev.cancel_read(&self.ticket);
        }
        drop(self.take());
    }
}

/// Largest transfer one `WRITE_HOST` / `READ_HOST` record carries: the device moves it without the host, so the
/// size only bounds how long one record holds its queue (and how late a reset or an unregister sees it stop).
const REGISTERED_PIECE: usize = 4 << 20;

impl Buffer {
    /// Writes the buffer from registered host memory ([`super::Device::register_host_memory`]): the dense row-major
    /// tensor at `offset` in `reg`, which the device reads directly (`WRITE_HOST`, docs/device-interface.md
    /// §4.2.10) with no copy through the issue ring. The memory must not change until the write has completed:
    /// with `blocking` this call waits for that; otherwise it completes before [`super::Device::finish`] on `cq`
    /// returns, or an event recorded on `cq` after it. Tiled buffers need the host to tilize and are refused: use
    /// [`Buffer::write`] for them. Failures are as [`Buffer::write`]'s.
    pub fn write_from(&self, cq: u16, reg: &super::HostRegistration, offset: usize, blocking: bool) -> Result<()> {
        self.registered(cq, reg, offset, true, blocking)
    }

    /// Reads the buffer into registered host memory at `offset` in `reg` (dense row-major), which the device writes
    /// directly (`READ_HOST`) with no copy through the completion ring. With `blocking` the data is in place when
    /// this returns; otherwise once [`super::Device::finish`] on `cq` returns, or an event recorded on `cq` after it
    /// completes. Tiled buffers are refused (use [`Buffer::read`]); a buffer whose contents are undefined is not
    /// read ([`crate::Error::ContentsUndefined`]).
    pub fn read_into(&self, cq: u16, reg: &super::HostRegistration, offset: usize, blocking: bool) -> Result<()> {
        self.check_contents("read")?;
        self.registered(cq, reg, offset, false, blocking)
    }

    fn registered(
        &self,
        cq: u16,
        reg: &super::HostRegistration,
        offset: usize,
        write: bool,
        blocking: bool,
    ) -> Result<()> {
        let what = if write { "write_from (registered host memory)" } else { "read_into (registered host memory)" };
        let dev = &self.dev;
        let _s = dev.span(if write { "write" } else { "read" }, "api");
        if self.spec.layout == TensorLayout::Tile {
            return Err(crate::Error::InvalidArgument(format!(
                "{what}: buffer {} is tiled, and registered transfers move bytes unchanged while a tiled buffer needs \
                 the host to tilize them; use Buffer::write / Buffer::read (ttdrv_buffer_write / ttdrv_buffer_read)",
                self.spec
            )));
        }
        let s = self.spec;
        let row_bytes = s.cols as u64 * s.dtype.size() as u64;
        let row_bytes32 = u32::try_from(row_bytes).map_err(|_| {
            crate::Error::InvalidArgument(format!("{what}: rows of {row_bytes} bytes are too long for one record"))
        })?;
        let mut uses = reg.begin(dev, offset, s.host_bytes(), what)?;
        let mut st = dev.lock_queue(cq)?;
        st.forbid_capture(what)?;
        let epoch = dev.epoch.load(Ordering::Acquire);
        let mem = s.mem.buffer_type.memory();
        let base_iova = reg.iova.0 + offset as u64;
        let pieces = plan(self, REGISTERED_PIECE);
        let total: u64 = pieces.iter().map(|p| self.piece_bytes(p)).sum();
        let mut enqueued = Progress { records: 0, bytes: 0 };
        let mut result = Ok(());
        for piece in &pieces {
            let x = match *piece {
                Piece::Paged { start, n } => records::HostDma {
                    mem,
                    mode: records::host_dma_mode::PAGED,
                    unit: 0,
                    piece: row_bytes32,
                    base: self.addr,
                    dev_stride: self.page_stride,
                    start_page: start,
                    count: n,
                    host_stride: row_bytes32,
                    iova: base_iova + start as u64 * row_bytes,
                },
                Piece::Linear { unit, offset, rows, piece, host_off } => records::HostDma {
                    mem,
                    mode: records::host_dma_mode::LINEAR,
                    unit,
                    piece,
                    base: offset,
                    dev_stride: self.page_stride,
                    start_page: 0,
                    count: rows,
                    host_stride: row_bytes32,
                    iova: base_iova + host_off,
                },
                Piece::Tiles(_) => unreachable!("tiled buffers are refused above"),
            };
            let name = if write { "write" } else { "read" };
            let r = dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), name, "transfer", |slot, m| {
                if write { records::encode_write_host(slot, m, &x) } else { records::encode_read_host(slot, m, &x) }
            });
            match r {
                Ok(_) => {
                    enqueued.records += 1;
                    enqueued.bytes += x.bytes();
                    let (issuer, t) = st.live()?;
                    issuer.publish(t.as_ref());
                    // The memory is the device's until this record has retired (unregister waits for it).
                    uses.per_queue[cq as usize] = Some(super::registered::UseMark { epoch, wr: issuer.wr() });
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        drop(uses);
        if let Err(e) = result {
            if enqueued.records == 0 {
                return Err(e);
            }
            if write {
                self.contents.mark_partial(epoch, cq, enqueued.bytes, total);
                return Err(self.write_stopped(cq, enqueued, pieces.len(), total, e));
            }
            return Err(e);
        }
        if write {
            self.contents.mark_written(epoch);
        }
        drop(st);
        if blocking {
            let label = if write { "blocking write_from" } else { "blocking read_into" };
            let r = dev.record_internal(cq, label).and_then(|ev| dev.wait_event(&ev, dev.params.timeout, label));
            if let Err(e) = r {
                return Err(if write { self.write_stopped(cq, enqueued, pieces.len(), total, e) } else { e });
            }
        }
        Ok(())
    }
}
