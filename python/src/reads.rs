//! Non-blocking reads (`Tensor.cpu(blocking=False)`): the one place where this package issues them and decides
//! when their destination may be freed.
//!
//! The driver's non-blocking read writes into caller memory later, when the completion arrives, and dropping its
//! handle does not cancel it. So the destination (owned host memory) lives in a [`Pending`] beside the handle; the
//! tensor exposes neither until [`Pending::wait`] has seen the data in place. If the tensor goes away first, the
//! pair becomes an orphan, kept until the read has completed or can never be delivered (the device was closed or
//! reset, which drops reads in flight) and reaped by the next read or `close_device`.

use crate::host::{HostBytes, HostStorage};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use ttdrv::device::{Buffer, PendingRead};

/// A read in flight into host memory this package owns.
pub struct Pending {
    read: Option<PendingRead>,
    dst: Option<Arc<HostStorage>>,
    done: AtomicBool,
}

/// Reads whose tensor went away before their data arrived, with their destinations.
static ORPHANS: Mutex<Vec<(PendingRead, Arc<HostStorage>)>> = Mutex::new(Vec::new());

/// True when a read can never write its destination again: it completed, or the device dropped it.
fn settled(r: &PendingRead) -> bool {
    match r.is_done() {
        Ok(done) => done,
        Err(e) => {
            matches!(e, ttdrv::Error::Closed { .. } | ttdrv::Error::DroppedByReset { .. } | ttdrv::Error::Forked { .. })
        }
    }
}

/// Frees the destinations of orphaned reads that have settled.
pub fn reap() {
    let mut o = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    if !o.is_empty() {
        o.retain(|(r, _)| !settled(r));
    }
}

/// Enqueues a read of `buf` on queue `cq` into fresh host memory.
pub fn start(buf: &Buffer, cq: u16) -> ttdrv::Result<Pending> {
    reap();
    let len = buf.spec().host_bytes() as usize;
    let bytes = HostBytes::zeroed(len);
    let ptr = bytes.ptr();
    let dst = Arc::new(HostStorage::Owned(bytes));
    // SAFETY: `ptr` is valid for writes of the buffer's host size (allocated just above with exactly that size);
    // the memory stays allocated until the read has settled (held by the Pending, then by ORPHANS), and nobody
    // reads or writes it before `Pending::wait` has seen the data arrive (the tensor exposes it only after that).
    let read = unsafe { buf.read_nonblocking(cq, ptr)? };
    Ok(Pending { read: Some(read), dst: Some(dst), done: AtomicBool::new(false) })
}

impl Pending {
    /// Blocks until the data is in place and returns the memory, now safe to share. Call it without the GIL.
    pub fn wait(&self) -> ttdrv::Result<Arc<HostStorage>> {
        let (Some(read), Some(dst)) = (&self.read, &self.dst) else {
            unreachable!("taken only by Drop");
        };
        if !self.done.load(Ordering::Acquire) {
            read.wait()?;
            self.done.store(true, Ordering::Release);
        }
        Ok(dst.clone())
    }

    /// Whether the data is in place (non-blocking).
    pub fn is_done(&self) -> ttdrv::Result<bool> {
        if self.done.load(Ordering::Acquire) {
            return Ok(true);
        }
        let done = self.read.as_ref().map_or(Ok(true), |r| r.is_done())?;
        if done {
            self.done.store(true, Ordering::Release);
        }
        Ok(done)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (Some(read), Some(dst)) = (self.read.take(), self.dst.take()) else {
            return;
        };
        if self.done.load(Ordering::Acquire) || settled(&read) {
            return;
        }
        ORPHANS.lock().unwrap_or_else(|e| e.into_inner()).push((read, dst));
    }
}
