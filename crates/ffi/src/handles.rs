//! Checked handles: what C holds is an encoded (kind, slot, generation) triple, never a pointer to Rust memory.
//! A freed, forged or wrong-kind handle is therefore an error, never a use-after-free.

use super::{FfiError, FfiResult};
use smallvec::SmallVec;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use strum::{EnumIter, FromRepr};

/// The kind bits of a handle: declared once, here; decoding derives from this list (`FromRepr`), and the tests
/// iterate it (`EnumIter`). 0 is never a kind, so a NULL-ish or zeroed value never decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, FromRepr)]
#[repr(u8)]
pub(crate) enum Kind {
    Device = 1,
    Buffer = 2,
    Event = 3,
    Program = 4,
    Model = 5,
    HostMemory = 6,
    TraceFile = 7,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Device => "ttdrv_device",
            Kind::Buffer => "ttdrv_buffer",
            Kind::Event => "ttdrv_event",
            Kind::Program => "ttdrv_program",
            Kind::Model => "ttdrv_mlp",
            Kind::HostMemory => "ttdrv_host_memory",
            Kind::TraceFile => "ttdrv_trace_file",
        }
    }
}

/// An object the registry owns.
#[derive(Clone)]
pub(crate) enum Obj {
    Device(Arc<ttdrv::Device>),
    Buffer(Arc<ttdrv::Buffer>),
    Event(Arc<ttdrv::Event>),
    Program(Arc<ttdrv::device::program::Program>),
    Model(Arc<ttdrv::device::model::Mlp>),
    HostMemory(Arc<ttdrv::HostRegistration>),
    TraceFile(Arc<crate::trace_patch::SavedListing>),
}

impl Obj {
    fn kind(&self) -> Kind {
        match self {
            Obj::Device(_) => Kind::Device,
            Obj::Buffer(_) => Kind::Buffer,
            Obj::Event(_) => Kind::Event,
            Obj::Program(_) => Kind::Program,
            Obj::Model(_) => Kind::Model,
            Obj::HostMemory(_) => Kind::HostMemory,
            Obj::TraceFile(_) => Kind::TraceFile,
        }
    }
}

/// A driver object C names through a handle of one kind.
pub(crate) trait Handled: Sized {
    const KIND: Kind;
    fn into_obj(this: Arc<Self>) -> Obj;
    fn from_obj(obj: Obj) -> Option<Arc<Self>>;
}

macro_rules! handled {
    ($t:ty, $kind:ident) => {
        impl Handled for $t {
            const KIND: Kind = Kind::$kind;
            fn into_obj(this: Arc<Self>) -> Obj {
                Obj::$kind(this)
            }
            fn from_obj(obj: Obj) -> Option<Arc<Self>> {
                match obj {
                    Obj::$kind(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}

handled!(ttdrv::Device, Device);
handled!(ttdrv::Buffer, Buffer);
handled!(ttdrv::Event, Event);
handled!(ttdrv::device::program::Program, Program);
handled!(ttdrv::device::model::Mlp, Model);
handled!(ttdrv::HostRegistration, HostMemory);
handled!(crate::trace_patch::SavedListing, TraceFile);

/// Registers `obj` and returns the handle C receives for it.
pub(crate) fn register<T: Handled, C>(obj: T) -> *mut C {
    insert(T::into_obj(Arc::new(obj))) as *mut C
}

/// The object behind handle argument `name`: NULL, and anything but a live handle of `T`'s kind, is an error that
/// says which.
pub(crate) fn lookup<T: Handled, C>(h: *const C, name: &'static str) -> FfiResult<Arc<T>> {
    resolver().get(h, name)
}

/// One read of the registry for a call that names several handles (a dispatch: its program and buffers): each is
/// resolved once, under one lock, and the lock is let go before the call does its work — a dispatch may wait for ring
/// space, and a thread creating or freeing a handle must not wait behind it.
pub(crate) struct Resolver {
    r: RwLockReadGuard<'static, Registry>,
}

/// Locks the registry for reading until the [`Resolver`] is dropped.
pub(crate) fn resolver() -> Resolver {
    Resolver { r: REGISTRY.read().unwrap_or_else(|e| e.into_inner()) }
}

impl Resolver {
    /// As [`lookup`], under this resolver's lock.
    #[inline]
    pub fn get<T: Handled, C>(&self, h: *const C, name: &'static str) -> FfiResult<Arc<T>> {
        if h.is_null() {
            return Err(FfiError::Null(name));
        }
        get_in(&self.r, h as usize, T::KIND)
            .and_then(T::from_obj)
            .ok_or_else(|| FfiError::Status(crate::ttdrv_status::InvalidHandle, describe_bad(h as usize, T::KIND)))
    }

    /// Every handle of `hs`, each as argument `name` (a NULL entry is NULL_PARAMETER); up to [`INLINE_HANDLES`]
    /// without allocating.
    pub fn all<T: Handled, C>(&self, hs: &[*mut C], name: &'static str) -> FfiResult<Handles<T>> {
        // A plain loop: collecting `Result`s into a SmallVec costs several times as much on this hot path.
        let mut v = Handles::new();
        for &h in hs {
            v.push(self.get(h, name)?);
        }
        Ok(v)
    }
}

/// Handles a call resolves as a list (a dispatch's buffers) that it keeps without allocating.
pub(crate) const INLINE_HANDLES: usize = 8;

/// A list of resolved handles: inline up to [`INLINE_HANDLES`].
pub(crate) type Handles<T> = SmallVec<[Arc<T>; INLINE_HANDLES]>;

/// Releases handle `h` for a `_free`/`_close` call: NULL is a no-op (`None`); a stale, forged or wrong-kind handle is
/// an error. The object lives on while in-flight calls still hold it.
pub(crate) fn release<T: Handled, C>(h: *mut C) -> FfiResult<Option<Arc<T>>> {
    if h.is_null() {
        return Ok(None);
    }
    remove(h as usize, T::KIND)
        .and_then(T::from_obj)
        .map(Some)
        .ok_or_else(|| FfiError::Status(crate::ttdrv_status::InvalidHandle, describe_bad(h as usize, T::KIND)))
}

struct Slot {
    generation: u32,
    obj: Option<Obj>,
}

#[derive(Default)]
struct Registry {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

static REGISTRY: RwLock<Registry> = RwLock::new(Registry { slots: Vec::new(), free: Vec::new() });

const KIND_BITS: u64 = 4;
const INDEX_BITS: u64 = 28;

fn encode(kind: Kind, index: u32, generation: u32) -> usize {
    (((generation as u64) << 32) | ((index as u64 + 1) << KIND_BITS) | kind as u64) as usize
}

fn decode(h: usize) -> Option<(Kind, u32, u32)> {
    let h = h as u64;
    let kind = Kind::from_repr((h & ((1 << KIND_BITS) - 1)) as u8)?;
    let index = ((h >> KIND_BITS) & ((1 << INDEX_BITS) - 1)).checked_sub(1)? as u32;
    Some((kind, index, (h >> 32) as u32))
}

/// Stores `obj` and returns its handle value.
fn insert(obj: Obj) -> usize {
    let kind = obj.kind();
    let mut r = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    let index = match r.free.pop() {
        Some(i) => i,
        None => {
            r.slots.push(Slot { generation: 0, obj: None });
            (r.slots.len() - 1) as u32
        }
    };
    let slot = &mut r.slots[index as usize];
    slot.generation = slot.generation.wrapping_add(1).max(1);
    slot.obj = Some(obj);
    encode(kind, index, slot.generation)
}

/// Why a handle was refused.
pub(crate) fn describe_bad(h: usize, want: Kind) -> String {
    match decode(h) {
        Some((k, _, _)) if k != want => {
            format!("handle {h:#x} is a {}, but a {} is required", k.name(), want.name())
        }
        Some(_) => format!(
            "{} handle {h:#x} is stale: the object was freed or closed. Do not use a handle after its _free/_close \
             call",
            want.name()
        ),
        None => format!("{h:#x} is not a {} handle (never returned by ttdrv, or corrupted)", want.name()),
    }
}

/// The object behind `h` in the (locked) registry `r`, if `h` is a live handle of kind `want`.
#[inline]
fn get_in(r: &Registry, h: usize, want: Kind) -> Option<Obj> {
    let (kind, index, generation) = decode(h)?;
    if kind != want {
        return None;
    }
    let slot = r.slots.get(index as usize)?;
    if slot.generation != generation {
        return None;
    }
    slot.obj.clone()
}

/// Removes the object behind `h` (it is dropped when the last in-flight user lets go).
pub(crate) fn remove(h: usize, want: Kind) -> Option<Obj> {
    let (kind, index, generation) = decode(h)?;
    if kind != want {
        return None;
    }
    let mut r = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    let slot = r.slots.get_mut(index as usize)?;
    if slot.generation != generation || slot.obj.is_none() {
        return None;
    }
    let obj = slot.obj.take();
    r.free.push(index);
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashSet;
    use strum::IntoEnumIterator;

    #[test]
    fn every_kind_round_trips_with_a_distinct_value_and_name() {
        let (mut values, mut names) = (HashSet::new(), HashSet::new());
        for kind in Kind::iter() {
            let v = kind as u8;
            assert!(v != 0 && u64::from(v) < 1 << KIND_BITS, "{kind:?} = {v} does not fit the kind bits");
            assert!(values.insert(v), "{kind:?} repeats the value {v}");
            assert!(names.insert(kind.name()), "{kind:?} repeats the name {}", kind.name());
            for (index, generation) in [(0, 1), (12345, 77), ((1 << INDEX_BITS) - 2, u32::MAX)] {
                let h = encode(kind, index, generation);
                assert_eq!(decode(h), Some((kind, index, generation)), "{kind:?} handle {h:#x}");
                assert!(describe_bad(h, kind).contains("stale"), "{}", describe_bad(h, kind));
            }
            // The same slot read as every other kind is refused, naming both kinds.
            for other in Kind::iter().filter(|&o| o != kind) {
                let msg = describe_bad(encode(kind, 3, 1), other);
                assert!(msg.contains(kind.name()) && msg.contains(other.name()), "{msg}");
            }
        }
    }

    #[test]
    fn junk_does_not_decode() {
        assert_eq!(decode(0), None);
        assert_eq!(decode(0xdead_beef_0000_0000), None, "no kind bits");
        let unused = (1..1u64 << KIND_BITS).find(|&k| Kind::from_repr(k as u8).is_none()).unwrap_or(0);
        assert_eq!(decode(((1 << KIND_BITS) | unused) as usize), None, "kind {unused} does not exist");
        assert_eq!(decode(Kind::Device as usize), None, "slot 0 is never used (index + 1 is encoded)");
    }
}
