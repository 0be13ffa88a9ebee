//! Non-blocking reads (`Tensor.cpu(blocking=False)`): the one place where this package issues them.
//!
//! They use the driver's owned read ([`Buffer::read_owned`]): the read owns its destination until the data is in
//! place, and dropping it cancels the read before freeing the destination, so nothing the device sends later can
//! land in memory Python may see. A [`Pending`] holds the read until a wait takes it: a wait that succeeds turns it
//! into host memory (shared from then on, numpy views included); a wait that fails (timeout, fault, close) has the
//! driver cancel the read and free the destination, and the tensor reports that error from then on. A tensor
//! dropped with its read in flight drops the read, which cancels it.

use crate::host::{HostBytes, HostStorage};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use ttdrv::ErrorKind;
use ttdrv::device::{Buffer, OwnedRead};

/// A failed read: the driver's error kind and message (kept, so that every later use reports the same failure).
pub type Failure = (ErrorKind, String);

enum State {
    /// In flight; nobody is waiting for it.
    InFlight(OwnedRead),
    /// A thread took the read to wait for it (without the GIL); others wait on the condition variable.
    Waiting,
    /// The data is in place.
    Done(Arc<HostStorage>),
    /// The read failed and was cancelled; its destination is freed.
    Failed(Failure),
}

fn failure(e: &ttdrv::Error) -> Failure {
    (e.kind(), format!("the non-blocking read failed: {e}"))
}

/// A read in flight into memory it owns.
pub struct Pending {
    state: Mutex<State>,
    changed: Condvar,
}

/// Enqueues a read of `buf` on queue `cq` into fresh host memory.
pub fn start(buf: &Buffer, cq: u16) -> ttdrv::Result<Pending> {
    let dst = vec![0u8; buf.spec().host_bytes() as usize];
    let read = buf.read_owned(cq, dst)?;
    Ok(Pending { state: Mutex::new(State::InFlight(read)), changed: Condvar::new() })
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks (at most the device's timeout) until the data is in place and returns the memory, now safe to share;
    /// or returns the failure, the same on every call. Call it without the GIL.
    pub fn wait(&self) -> Result<Arc<HostStorage>, Failure> {
        let mut st = self.lock();
        loop {
            match std::mem::replace(&mut *st, State::Waiting) {
                State::InFlight(read) => {
                    drop(st);
                    // On failure OwnedRead::wait cancels the read and frees its destination before returning.
                    let next = match read.wait() {
                        Ok(v) => State::Done(Arc::new(HostStorage::Owned(HostBytes::from_vec(v)))),
                        Err(e) => State::Failed(failure(&e)),
                    };
                    st = self.lock();
                    *st = next;
                    self.changed.notify_all();
                }
                State::Waiting => st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                State::Done(data) => {
                    *st = State::Done(data.clone());
                    return Ok(data);
                }
                State::Failed(f) => {
                    *st = State::Failed(f.clone());
                    return Err(f);
                }
            }
        }
    }

    /// Whether the data is in place (non-blocking; false while another thread is still waiting for it).
    pub fn is_done(&self) -> Result<bool, Failure> {
        let mut st = self.lock();
        match &mut *st {
            State::InFlight(read) => read.is_done().map_err(|e| failure(&e)),
            State::Waiting => Ok(false),
            State::Done(_) => Ok(true),
            State::Failed(f) => Err(f.clone()),
        }
    }
}
