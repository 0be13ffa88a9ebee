//! Device memory allocation: one offset space per memory kind, the same offset in every bank or core.
//!
//! Placement is deterministic first fit, bottom-up by default and top-down on request, so the same sequence of
//! allocations and frees always yields the same addresses. Free is immediate: a freed range can be handed out again
//! at once (work already queued on a queue runs before anything queued after it on that queue; across queues,
//! events order reuse). Ranges a live trace depends on are owned by the trace and never handed out.

use std::collections::BTreeMap;
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

/// A first-fit allocator over `[start, end)`.
#[derive(Clone, Debug)]
pub struct RangeAllocator {
    start: u64,
    end: u64,
    blocks: BTreeMap<u64, Block>,
    /// Bumped by every change, so callers can cache checks against the current layout.
    generation: u64,
}

impl RangeAllocator {
    /// An empty allocator over `[start, end)`.
    pub fn new(start: u64, end: u64) -> RangeAllocator {
        RangeAllocator { start, end: end.max(start), blocks: BTreeMap::new(), generation: 0 }
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
        for (&s, b) in &self.blocks {
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

    /// Allocates `size` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, size: u64, align: u64, dir: Direction, owner: Owner) -> Result<u64, AllocFailure> {
        let size = size.max(1);
        let gaps = self.gaps();
        let fit = |&(s, e): &(u64, u64)| -> Option<u64> {
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
        };
        let found = match dir {
            Direction::BottomUp => gaps.iter().find_map(fit),
            Direction::TopDown => gaps.iter().rev().find_map(fit),
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
        match self.blocks.get(&addr) {
            Some(b) if b.owner == owner => {
                self.blocks.remove(&addr);
                self.generation += 1;
                true
            }
            _ => false,
        }
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
        let first = self.blocks.range(..=s).next_back().map(|(&bs, b)| (bs, *b));
        let later = self.blocks.range(s.saturating_add(1)..e).map(|(&bs, b)| (bs, *b));
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
        self.blocks.range(..=at).next_back().filter(|(_, b)| b.end > at).map(|(&s, b)| (s, b.end, b.owner))
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
}
