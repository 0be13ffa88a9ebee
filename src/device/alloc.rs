//! Device memory allocation: one offset space per memory kind, the same offset in every bank or core.
//!
//! Placement is deterministic first fit, bottom-up by default and top-down on request, so the same sequence of
//! allocations and frees always yields the same addresses. Free is immediate: a freed range can be handed out again
//! at once (work already queued on a queue runs before anything queued after it on that queue; across queues,
//! events order reuse). Ranges a live trace depends on are owned by the trace and never handed out.

use std::fmt;

/// Who owns an allocated range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A buffer, by id.
    Buffer(u64),
    /// A trace (its buffer, or a range its commands touch), by trace id.
    Trace(u32),
    /// Reserved for the driver (kernel images).
    Driver,
}

/// Placement direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Lowest fitting address.
    BottomUp,
    /// Highest fitting address.
    TopDown,
}

#[derive(Clone, Copy, Debug)]
struct Block {
    end: u64,
    owner: Owner,
}

/// Why an allocation failed, with the numbers a user needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocFailure {
    /// Bytes asked, per unit.
    pub asked: u64,
    /// Bytes free, per unit.
    pub free: u64,
    /// Largest free block, per unit.
    pub largest: u64,
    /// Bytes owned by live traces, per unit.
    pub traced: u64,
}

impl fmt::Display for AllocFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "asked {} bytes per unit; {} bytes free, largest free block {} bytes, {} bytes owned by live traces",
            self.asked, self.free, self.largest, self.traced
        )
    }
}

/// The allocated blocks, sorted by start: a vector rather than a `BTreeMap`, because an op call allocates and frees
/// its output on the path whose host cost issue 14 measures, and a device holds tens to a few thousand blocks —
/// where a binary search and a short `memmove` cost a fraction of a B-tree's node walk and rebalancing.
#[derive(Clone, Debug, Default)]
struct Blocks(Vec<(u64, Block)>);

impl Blocks {
    fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &Block)> {
        self.0.iter().map(|(s, b)| (s, b))
    }
    fn insert(&mut self, s: u64, b: Block) {
        match self.0.binary_search_by_key(&s, |e| e.0) {
            Ok(i) => self.0[i].1 = b,
            Err(i) => self.0.insert(i, (s, b)),
        }
    }
    /// Removes the block starting at `s` if `keep_out` says so; whether it did.
    fn remove_if(&mut self, s: u64, keep_out: impl FnOnce(&Block) -> bool) -> bool {
        match self.0.binary_search_by_key(&s, |e| e.0) {
            Ok(i) if keep_out(&self.0[i].1) => {
                self.0.remove(i);
                true
            }
            _ => false,
        }
    }
    fn retain(&mut self, mut f: impl FnMut(&u64, &Block) -> bool) {
        self.0.retain(|(s, b)| f(s, b))
    }
    /// The last block starting at or before `at`.
    fn last_at_or_before(&self, at: u64) -> Option<(&u64, &Block)> {
        let i = self.0.partition_point(|e| e.0 <= at);
        i.checked_sub(1).map(|i| (&self.0[i].0, &self.0[i].1))
    }
    /// The blocks starting in `[a, b)`.
    fn starting_in(&self, a: u64, b: u64) -> impl Iterator<Item = (&u64, &Block)> {
        let lo = self.0.partition_point(|e| e.0 < a);
        let hi = self.0.partition_point(|e| e.0 < b).max(lo);
        self.0[lo..hi].iter().map(|(s, b)| (s, b))
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// A first-fit allocator over `[start, end)`.
#[derive(Clone, Debug)]
pub struct RangeAllocator {
    start: u64,
    end: u64,
    blocks: Blocks,
    /// Bumped by every change, so callers can cache checks against the current layout.
    generation: u64,
}

impl RangeAllocator {
    /// An empty allocator over `[start, end)`.
    pub fn new(start: u64, end: u64) -> RangeAllocator {
        RangeAllocator { start, end: end.max(start), blocks: Blocks::default(), generation: 0 }
    }

    /// The managed range.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// Changes whenever the layout changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn gaps(&self) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut cur = self.start;
        for (&s, b) in self.blocks.iter() {
            if s > cur {
                gaps.push((cur, s));
            }
            cur = cur.max(b.end);
        }
        if cur < self.end {
            gaps.push((cur, self.end));
        }
        gaps
    }

    /// Where `size` bytes aligned to `align` go in the gap `[s, e)`, placed as `dir` says, if they fit.
    fn fit(s: u64, e: u64, size: u64, align: u64, dir: Direction) -> Option<u64> {
        match dir {
            Direction::BottomUp => {
                let a = s.checked_add(align - 1)? & !(align - 1);
                (a.checked_add(size)? <= e).then_some(a)
            }
            Direction::TopDown => {
                let a = e.checked_sub(size)? & !(align - 1);
                (a >= s).then_some(a)
            }
        }
    }

    /// Allocates `size` bytes aligned to `align` (a power of two).
    ///
    /// First fit over the gaps between blocks, walked in place (no list of gaps is built: an op call allocates its
    /// output here, on the path whose host cost issue 14 measures).
    pub fn alloc(&mut self, size: u64, align: u64, dir: Direction, owner: Owner) -> Result<u64, AllocFailure> {
        let size = size.max(1);
        let found = match dir {
            Direction::BottomUp => {
                let mut cur = self.start;
                let mut found = None;
                for (&s, b) in self.blocks.iter() {
                    if s > cur
                        && let Some(a) = Self::fit(cur, s, size, align, dir)
                    {
                        found = Some(a);
                        break;
                    }
                    cur = cur.max(b.end);
                }
                found.or_else(|| if cur < self.end { Self::fit(cur, self.end, size, align, dir) } else { None })
            }
            Direction::TopDown => {
                // Blocks never overlap, so walking down from the end, each gap lies between a block's end and the
                // start of the block above it.
                let mut hi = self.end;
                let mut found = None;
                for (&s, b) in self.blocks.iter().rev() {
                    if b.end < hi
                        && let Some(a) = Self::fit(b.end, hi, size, align, dir)
                    {
                        found = Some(a);
                        break;
                    }
                    hi = hi.min(s);
                }
                found.or_else(|| if self.start < hi { Self::fit(self.start, hi, size, align, dir) } else { None })
            }
        };
        match found {
            Some(a) => {
                self.blocks.insert(a, Block { end: a + size, owner });
                self.generation += 1;
                Ok(a)
            }
            None => Err(self.failure(size)),
        }
    }

    /// The failure report for an allocation of `size`.
    pub fn failure(&self, size: u64) -> AllocFailure {
        let gaps = self.gaps();
        AllocFailure {
            asked: size,
            free: gaps.iter().map(|(s, e)| e - s).sum(),
            largest: gaps.iter().map(|(s, e)| e - s).max().unwrap_or(0),
            traced: self
                .blocks
                .iter()
                .filter(|(_, b)| matches!(b.owner, Owner::Trace(_)))
                .map(|(s, b)| b.end - s)
                .sum(),
        }
    }

    /// Frees the block at `addr` owned by `owner`. Returns false if there is none.
    pub fn free(&mut self, addr: u64, owner: Owner) -> bool {
        if self.blocks.remove_if(addr, |b| b.owner == owner) {
            self.generation += 1;
            return true;
        }
        false
    }

    /// Frees every block owned by `owner`; returns the bytes freed.
    pub fn free_owner(&mut self, owner: Owner) -> u64 {
        let before: u64 = self.blocks.iter().map(|(s, b)| b.end - s).sum();
        self.blocks.retain(|_, b| b.owner != owner);
        let after: u64 = self.blocks.iter().map(|(s, b)| b.end - s).sum();
        if before != after {
            self.generation += 1;
        }
        before - after
    }

    /// Splits `[s, e)` into pieces that are free and pieces that lie in blocks (with their owners).
    pub fn classify(&self, s: u64, e: u64) -> Vec<(u64, u64, Option<Owner>)> {
        let mut out = Vec::new();
        let mut cur = s;
        // The block that may start before `s` and reach into it.
        let first = self.blocks.last_at_or_before(s).map(|(&bs, b)| (bs, *b));
        let later = self.blocks.starting_in(s.saturating_add(1), e).map(|(&bs, b)| (bs, *b));
        for (bs, b) in first.into_iter().chain(later) {
            if b.end <= cur || bs >= e {
                continue;
            }
            if bs > cur {
                out.push((cur, bs, None));
                cur = bs;
            }
            let pe = b.end.min(e);
            out.push((cur, pe, Some(b.owner)));
            cur = pe;
        }
        if cur < e {
            out.push((cur, e, None));
        }
        out
    }

    /// The block holding offset `at`, as (start, end, owner), if one does.
    pub fn block_at(&self, at: u64) -> Option<(u64, u64, Owner)> {
        self.blocks.last_at_or_before(at).filter(|(_, b)| b.end > at).map(|(&s, b)| (s, b.end, b.owner))
    }

    /// Marks the free range `[s, e)` as owned by `owner`. The range must be free.
    pub fn claim(&mut self, s: u64, e: u64, owner: Owner) {
        debug_assert!(self.classify(s, e).iter().all(|p| p.2.is_none()));
        if s < e {
            self.blocks.insert(s, Block { end: e, owner });
            self.generation += 1;
        }
    }

    /// The blocks owned by `owner`, as `[start, end)` in address order.
    pub fn blocks_of(&self, owner: Owner) -> Vec<(u64, u64)> {
        self.blocks.iter().filter(|(_, b)| b.owner == owner).map(|(&s, b)| (s, b.end)).collect()
    }

    /// Total bytes owned by `owner`.
    pub fn owned_by(&self, owner: Owner) -> u64 {
        self.blocks.iter().filter(|(_, b)| b.owner == owner).map(|(s, b)| b.end - s).sum()
    }

    /// Number of allocated blocks.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_is_deterministic_and_reuses_freed_space() {
        let mut a = RangeAllocator::new(0x1000, 0x10000);
        let x = a.alloc(0x800, 0x100, Direction::BottomUp, Owner::Buffer(1)).unwrap();
        let y = a.alloc(0x800, 0x100, Direction::BottomUp, Owner::Buffer(2)).unwrap();
        assert_eq!((x, y), (0x1000, 0x1800));
        assert!(a.free(x, Owner::Buffer(1)));
        assert!(!a.free(x, Owner::Buffer(1)), "double free is refused");
        assert_eq!(a.alloc(0x800, 0x100, Direction::BottomUp, Owner::Buffer(3)).unwrap(), x);
        let top = a.alloc(0x100, 0x100, Direction::TopDown, Owner::Buffer(4)).unwrap();
        assert_eq!(top, 0xFF00);
    }

    #[test]
    fn failure_reports_the_numbers() {
        let mut a = RangeAllocator::new(0, 0x1000);
        a.alloc(0x400, 0x10, Direction::BottomUp, Owner::Trace(1)).unwrap();
        a.alloc(0x400, 0x10, Direction::BottomUp, Owner::Buffer(1)).unwrap();
        let f = a.alloc(0x900, 0x10, Direction::BottomUp, Owner::Buffer(2)).unwrap_err();
        assert_eq!(f, AllocFailure { asked: 0x900, free: 0x800, largest: 0x800, traced: 0x400 });
        assert!(f.to_string().contains("owned by live traces"));
    }

    #[test]
    fn classify_and_claim() {
        let mut a = RangeAllocator::new(0, 0x1000);
        a.alloc(0x100, 0x100, Direction::BottomUp, Owner::Buffer(1)).unwrap(); // [0, 0x100)
        let p = a.classify(0x80, 0x300);
        assert_eq!(p, vec![(0x80, 0x100, Some(Owner::Buffer(1))), (0x100, 0x300, None)]);
        a.claim(0x100, 0x300, Owner::Trace(5));
        assert_eq!(a.block_at(0x2FF), Some((0x100, 0x300, Owner::Trace(5))));
        assert_eq!(a.block_at(0x0), Some((0, 0x100, Owner::Buffer(1))));
        assert_eq!(a.block_at(0x300), None);
        assert_eq!(a.alloc(0x200, 0x100, Direction::BottomUp, Owner::Buffer(2)).unwrap(), 0x300);
        assert_eq!(a.free_owner(Owner::Trace(5)), 0x200);
        assert_eq!(a.alloc(0x200, 0x100, Direction::BottomUp, Owner::Buffer(3)).unwrap(), 0x100);
    }

    /// The placement the allocator had before it walked its gaps in place: the list of gaps, then first fit.
    fn reference_fit(a: &RangeAllocator, size: u64, align: u64, dir: Direction) -> Option<u64> {
        let size = size.max(1);
        let gaps = a.gaps();
        let fit = |&(s, e): &(u64, u64)| RangeAllocator::fit(s, e, size, align, dir);
        match dir {
            Direction::BottomUp => gaps.iter().find_map(fit),
            Direction::TopDown => gaps.iter().rev().find_map(fit),
        }
    }

    proptest::proptest! {
        /// Any sequence of allocations (both directions, several alignments) and frees places every block where the
        /// list-of-gaps first fit would: placement stays deterministic and unchanged.
        #[test]
        fn walking_the_gaps_in_place_places_as_the_gap_list_did(
            ops in proptest::collection::vec((0u8..4, 1u64..0x900, 0u32..4), 1..120)
        ) {
            let mut a = RangeAllocator::new(0x40, 0x8000);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (i, (kind, size, al)) in ops.into_iter().enumerate() {
                let align = 0x10u64 << (al * 2);
                if kind == 0 && !live.is_empty() {
                    let (addr, id) = live.remove(size as usize % live.len());
                    proptest::prop_assert!(a.free(addr, Owner::Buffer(id)));
                    continue;
                }
                let dir = if kind == 1 { Direction::TopDown } else { Direction::BottomUp };
                let want = reference_fit(&a, size, align, dir);
                let got = a.alloc(size, align, dir, Owner::Buffer(i as u64)).ok();
                proptest::prop_assert_eq!(got, want);
                if let Some(addr) = got {
                    live.push((addr, i as u64));
                }
            }
        }
    }
}
