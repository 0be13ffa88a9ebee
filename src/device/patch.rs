//! Patching a captured trace: rebinding its external buffers and updating its named scalars without capturing it
//! again (what CUDA graphs offer with `cudaGraphExecKernelNodeSetParams` / `cudaGraphExecUpdate`, and tt-metal's
//! traces do not).
//!
//! **What is patchable.** While a trace is captured, the driver learns which runtime-argument words of each launch
//! hold buffer addresses and which hold named scalars: the built-in operations know their own words (every tensor
//! accessor's address word; float parameters such as a scale factor or an epsilon), and a program launched with
//! [`crate::device::program::Program::launch_with`] declares its words with [`ArgRole`]s. A buffer the trace does
//! not own (an external binding, see `trace.rs`) is rebindable when every launch that used it declared where its
//! address is; a launch of [`crate::device::program::Program::run`] declares nothing, so the buffers it names are
//! not rebindable (their addresses may sit in any word). Nor is a buffer whose range another buffer used during the
//! capture (freed inside it and reused, e.g. by an intermediate): the trace's words for both point at that range, and
//! moving one would leave the other writing memory the trace no longer holds.
//!
//! **How a patch reaches the device.** A trace is a buffer of records in device DRAM that only the host writes
//! (docs/device-interface.md §4.2.9). A patch is an ordered, device-side write of only the patched words into that
//! buffer: one `WRITE_LINEAR` record per run of consecutive patched words inside a trace page, on the queue the
//! caller names. A replay already enqueued on that queue therefore runs with the old words, the next one with the
//! new: the cost is O(patched words), never O(trace). A replay in flight on *another* queue would race the write,
//! so a patch first checks every queue that replayed the trace since the last patch: a replay known complete needs
//! nothing; otherwise the caller passes an event recorded on that queue after the replay (the patch's queue waits
//! for it on the device), or the patch is refused naming the queue. Replays on other queues after a patch wait on
//! the device for the patch's writes, as they wait for the trace's upload.
//!
//! **Ownership.** A rebound buffer must be live, of the binding's spec (shape, element type, layout, memory
//! configuration) and on the trace's device; at every later replay it must still hold its range, exactly as the
//! captured buffer had to (`trace.rs`). With rebinding, the "deallocate, re-allocate at the same address and assert"
//! step of tt-metal's guide "Advanced Performance Optimizations for Models" (§1.3.2) becomes optional: rebind the
//! trace's input to wherever the new buffer landed.

use super::buffer::{Buffer, BufferSpec};
use crate::error::{Error, Result};
use std::fmt;
use ttdrv_contract::records::{self, ArgLocation, Body, FIXED_LEN};

/// The role of one runtime-argument word of a launch, declared so that a trace capturing the launch can be patched
/// ([`crate::device::program::Program::launch_with`]).
///
/// `word` counts the runtime words each core's kernel instance receives: its per-core words, then the common words
/// (contract §4.2.6). A stepped word cannot be declared (its value follows the core's position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgRole<'a> {
    /// Word `word` holds an address inside buffer `buffer` — an index into the launch's inputs, then its outputs.
    /// Its value at launch must lie in `[address, address + footprint]` of that buffer; a rebinding moves it by the
    /// same offset into the new buffer.
    Address {
        /// The runtime word.
        word: u16,
        /// The buffer, indexing inputs then outputs.
        buffer: usize,
    },
    /// Word `word` is the scalar `name` (1 to 64 printable ASCII characters): in a captured trace,
    /// [`crate::Device::trace_set_scalar`] changes every word declared with this name.
    Scalar {
        /// The runtime word.
        word: u16,
        /// The scalar's name.
        name: &'a str,
    },
}

/// What a named scalar of a trace holds, and the values a patch may give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalarKind {
    /// Any 32-bit word (a scalar a program declared: its kernel validates it).
    U32,
    /// An IEEE-754 single, finite (a built-in operation's factor or scale).
    F32,
    /// An IEEE-754 single, finite and not negative (an epsilon).
    F32NonNegative,
}

impl ScalarKind {
    /// Checks a new value; the error says what the value must be.
    pub(crate) fn check(self, bits: u32) -> std::result::Result<(), String> {
        let f = f32::from_bits(bits);
        match self {
            ScalarKind::U32 => Ok(()),
            ScalarKind::F32 if f.is_finite() => Ok(()),
            ScalarKind::F32 => Err(format!("{f} is not a finite number; this scalar is a float32 factor")),
            ScalarKind::F32NonNegative if f.is_finite() && f >= 0.0 => Ok(()),
            ScalarKind::F32NonNegative => Err(format!("{f} is not a finite number >= 0; this scalar is an epsilon")),
        }
    }

    /// The name used in messages and by the C ABI.
    pub fn name(self) -> &'static str {
        match self {
            ScalarKind::U32 => "u32",
            ScalarKind::F32 => "f32",
            ScalarKind::F32NonNegative => "f32 (>= 0)",
        }
    }
}

/// An external binding of a captured trace, as [`crate::Device::trace_bindings`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceBinding {
    /// `input0`, `output0`, ...: its role and its order (by memory, then captured address) — the names
    /// `trace_save` writes.
    pub name: String,
    /// The trace writes it before reading it (its output) rather than reading it first (its input).
    pub output: bool,
    /// The spec a buffer bound to it must have.
    pub spec: BufferSpec,
    /// The address of the buffer bound now.
    pub address: u64,
    /// Runtime-argument words a rebinding rewrites.
    pub words: u32,
    /// Whether it can be rebound: every launch that used it declared where its address is.
    pub rebindable: bool,
}

/// A named scalar of a captured trace, as [`crate::Device::trace_scalars`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceScalar {
    /// Its name: as a program declared it, or `<op>.<parameter>#<k>` for the k-th such parameter of a built-in
    /// operation in the trace (`scale.factor#0`, `softmax.scale#2`, `layer_norm.eps#0`, `fill.value#0`).
    pub name: String,
    /// What it holds.
    pub kind: ScalarKind,
    /// Its value now (raw bits; a float's `to_bits`).
    pub value: u32,
    /// Runtime-argument words an update rewrites.
    pub words: u32,
}

impl fmt::Display for TraceScalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ScalarKind::U32 => write!(f, "{} = {} (u32)", self.name, self.value),
            _ => write!(f, "{} = {} ({})", self.name, f32::from_bits(self.value), self.kind.name()),
        }
    }
}

/// The name of a scalar a launch declares.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ScalarName<'a> {
    /// Declared by the program's caller.
    User(&'a str),
    /// A built-in operation's parameter, `<op>.<parameter>`: numbered `#k` in the trace.
    Op(&'static str),
}

/// The roles of a launch's runtime words, as the dispatch path hands them to a capture (read only while capturing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ArgMap<'a> {
    /// (runtime word, index into inputs then outputs) of each word holding a buffer address.
    pub addrs: &'a [(u16, u8)],
    /// (runtime word, name, kind) of each named scalar.
    pub scalars: &'a [(u16, ScalarName<'a>, ScalarKind)],
    /// Every word holding an address of one of the launch's buffers is in `addrs`.
    pub complete: bool,
}

impl ArgMap<'static> {
    /// A launch that declares nothing: its buffers cannot be rebound.
    pub const OPAQUE: ArgMap<'static> = ArgMap { addrs: &[], scalars: &[], complete: false };
}

/// A patchable word of a captured trace: its byte offset in the records, and (for an address) its value minus the
/// bound buffer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Point {
    pub off: u32,
    pub delta: u32,
}

/// What a capture in progress has learnt about its patchable words.
#[derive(Debug, Default)]
pub(crate) struct CapturePoints {
    /// (buffer id, point, the buffer's memory, the word's value) for every declared address word.
    pub addrs: Vec<(u64, Point, super::buffer::BufferType, u32)>,
    /// (name, kind, value, byte offset) for every scalar word.
    pub scalars: Vec<(String, ScalarKind, u32, u32)>,
    /// Buffers named by a launch that did not declare all its address words.
    pub opaque: Vec<u64>,
    /// Some launch did not declare all its address words (so no word of the trace can be moved safely but those
    /// of buffers it does not name: see `opaque`).
    pub any_opaque: bool,
    /// How many parameters of each built-in operation the capture has numbered.
    op_counts: Vec<(&'static str, u32)>,
}

/// The byte offsets (from the record's start) of runtime word `word` of every core of the `LAUNCH` record `rec`:
/// one offset for a common word, one per core for a per-core word. `None` if the record is no launch, has no such
/// word, or the word is stepped.
pub(crate) fn word_offsets(rec: &[u8], word: usize, out: &mut Vec<u32>) -> Option<()> {
    let fixed: &[u8; FIXED_LEN] = rec.get(..FIXED_LEN)?.try_into().ok()?;
    let Ok((_, Body::Launch(l))) = records::decode(fixed) else { return None };
    let words: Vec<u32> = rec
        .get(FIXED_LEN..FIXED_LEN + l.args_bytes())?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let w = l.split_words(&words)?;
    for core in 0..l.rect.count() {
        match w.locate(&l, core, word)? {
            ArgLocation::Common(o) => {
                out.push(u32::try_from(o).ok()?);
                return Some(());
            }
            ArgLocation::PerCore(o) => out.push(u32::try_from(o).ok()?),
            ArgLocation::Step(_) => return None,
        }
    }
    Some(())
}

fn word_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

impl CapturePoints {
    /// Notes the patchable words of the launch record captured at `start` of `bytes`, whose runtime words `map`
    /// describes; `buffers` are its inputs then outputs. The roles were checked against the arguments before the
    /// launch was encoded, so a role that does not locate is a driver bug: it is skipped (its buffer becomes
    /// opaque) rather than trusted.
    pub fn note(&mut self, bytes: &[u8], start: usize, map: &ArgMap<'_>, buffers: &[&Buffer]) {
        let rec = &bytes[start..];
        let base = start as u32;
        let mut offs = Vec::new();
        for &(word, bi) in map.addrs {
            let Some(b) = buffers.get(bi as usize) else { continue };
            offs.clear();
            let ok = word_offsets(rec, word as usize, &mut offs).is_some();
            debug_assert!(ok, "address word {word} of a captured launch does not locate");
            if !ok {
                self.opaque.push(b.id);
                continue;
            }
            for &o in &offs {
                let value = word_at(rec, o as usize);
                let delta = value.wrapping_sub(b.addr as u32);
                self.addrs.push((b.id, Point { off: base + o, delta }, b.spec.mem.buffer_type, value));
            }
        }
        for &(word, name, kind) in map.scalars {
            offs.clear();
            if word_offsets(rec, word as usize, &mut offs).is_none() {
                debug_assert!(false, "scalar word {word} of a captured launch does not locate");
                continue;
            }
            let name = match name {
                ScalarName::User(n) => n.to_string(),
                ScalarName::Op(base) => {
                    let k = match self.op_counts.iter_mut().find(|(b, _)| *b == base) {
                        Some((_, n)) => {
                            *n += 1;
                            *n - 1
                        }
                        None => {
                            self.op_counts.push((base, 1));
                            0
                        }
                    };
                    format!("{base}#{k}")
                }
            };
            for &o in &offs {
                self.scalars.push((name.clone(), kind, word_at(rec, o as usize), base + o));
            }
        }
        if !map.complete {
            self.opaque.extend(buffers.iter().map(|b| b.id));
            self.any_opaque = true;
        }
    }
}

/// Checks a scalar's name (the rules of [`ArgRole::Scalar`]).
pub(crate) fn check_scalar_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "scalar name {name:?} must be 1 to 64 printable ASCII characters without spaces (e.g. \"seq_pos\")"
        ));
    }
    Ok(())
}

/// Checks the roles a caller declares for a launch of `rt` arguments (`num_rt_args` per-core words, `cores`
/// cores) naming `buffers` (inputs then outputs): every word exists and is not stepped, every address word holds
/// an address inside its buffer on every core, every scalar name is valid and a word has one role.
pub(crate) fn check_roles(
    roles: &[ArgRole<'_>],
    rt: &records::RtArgs<'_>,
    num_rt_args: usize,
    cores: usize,
    buffers: &[&Buffer],
) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(format!("launch_with: {m}")));
    let total = num_rt_args + rt.common.len();
    let mut seen = Vec::with_capacity(roles.len());
    for (i, r) in roles.iter().enumerate() {
        let word = match *r {
            ArgRole::Address { word, .. } | ArgRole::Scalar { word, .. } => word as usize,
        };
        if word >= total {
            return bad(format!("role {i} names runtime word {word}; each core receives {total} (0..{total})"));
        }
        if word < num_rt_args && rt.steps.iter().any(|s| s.index as usize == word) {
            return bad(format!(
                "role {i} names runtime word {word}, which a step gives (its value follows the core); declare an \
                 explicit or common word"
            ));
        }
        if seen.contains(&word) {
            return bad(format!("runtime word {word} has two roles; give each word one"));
        }
        seen.push(word);
        match *r {
            ArgRole::Address { buffer, .. } if buffer >= buffers.len() => {
                return bad(format!(
                    "role {i} names buffer {buffer}; the launch names {} (inputs, then outputs)",
                    buffers.len()
                ));
            }
            ArgRole::Address { buffer, .. } if buffer > u8::MAX as usize => {
                return bad(format!("role {i} names buffer {buffer}; at most 256 buffers can have roles"));
            }
            ArgRole::Address { .. } => {}
            ArgRole::Scalar { name, .. } => {
                if let Err(m) = check_scalar_name(name) {
                    return bad(format!("role {i}: {m}"));
                }
            }
        }
    }
    // Every core's words once, checked against every address role.
    if roles.iter().any(|r| matches!(r, ArgRole::Address { .. })) {
        for k in 0..cores {
            let w = rt.core_args(num_rt_args, k);
            for (i, r) in roles.iter().enumerate() {
                let ArgRole::Address { word, buffer } = *r else { continue };
                let (b, v) = (buffers[buffer], w[word as usize] as u64);
                if v < b.addr || v > b.addr + b.footprint {
                    return bad(format!(
                        "role {i}: runtime word {word} of core {k} is {v:#x}, not an address inside buffer {buffer} \
                         ([{:#x}, {:#x}]); declare the word that holds its address",
                        b.addr,
                        b.addr + b.footprint
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Coalesces patched words into runs: `(offset, bytes)` of consecutive words inside one trace page, in offset order.
pub(crate) fn runs(mut words: Vec<(u32, u32)>, page: u32) -> Vec<(u32, Vec<u8>)> {
    words.sort_unstable_by_key(|w| w.0);
    words.dedup_by_key(|w| w.0);
    let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
    for (off, v) in words {
        match out.last_mut() {
            Some((s, b)) if *s + b.len() as u32 == off && off % page != 0 => b.extend_from_slice(&v.to_le_bytes()),
            _ => out.push((off, v.to_le_bytes().to_vec())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_join_consecutive_words_inside_a_page_only() {
        let r = runs(vec![(8, 2), (4, 1), (12, 3), (64, 4), (60, 5), (200, 6), (4, 1)], 64);
        let offs: Vec<(u32, usize)> = r.iter().map(|(o, b)| (*o, b.len())).collect();
        assert_eq!(offs, vec![(4, 12), (60, 4), (64, 4), (200, 4)]);
        assert_eq!(r[0].1, [1u32, 2, 3].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    }

    #[test]
    fn scalar_kinds_refuse_what_their_kernels_cannot_take() {
        assert!(ScalarKind::F32.check(f32::NAN.to_bits()).is_err());
        assert!(ScalarKind::F32.check((-2.0f32).to_bits()).is_ok());
        assert!(ScalarKind::F32NonNegative.check((-1e-5f32).to_bits()).is_err());
        assert!(ScalarKind::F32NonNegative.check(1e-12f32.to_bits()).is_ok());
        assert!(ScalarKind::U32.check(u32::MAX).is_ok());
        assert!(check_scalar_name("seq_pos").is_ok());
        assert!(check_scalar_name("").is_err());
        assert!(check_scalar_name("a b").is_err());
        assert!(check_scalar_name(&"x".repeat(65)).is_err());
    }
}
