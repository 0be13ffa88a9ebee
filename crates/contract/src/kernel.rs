//! Kernel images, the built-in kernel catalog and tensor accessors (contract §8).

use super::Memory;
use super::wire::{table_enum, wire_struct};

/// Magic of a kernel image, "TTKI" (contract §8.1).
pub const IMAGE_MAGIC: u32 = 0x494B_5454;
/// Image format version (contract §8.1).
pub const IMAGE_VERSION: u16 = 1;
/// Bytes of the image header.
pub const IMAGE_HEADER: usize = 64;
/// Bytes reserved for the kernel name.
pub const NAME_LEN: usize = 48;

/// Words of a block argument (`r0, r1, c0, c1`), the first runtime arguments of every built-in kernel (contract
/// §8.2).
pub const BLOCK_WORDS: usize = 4;

/// One row of the built-in kernel catalog.
#[derive(Debug)]
pub struct KernelInfo {
    /// The name stored in the kernel image (contract §8.1).
    pub name: &'static str,
    /// Compile-time argument words the kernel takes.
    pub ct_words: usize,
    /// Runtime argument words per core the kernel takes.
    pub rt_words: usize,
}

table_enum! {
    /// The built-in kernels (contract §8.2): the one table of the catalog; the discriminant is the `KERNELS` bit.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum BuiltinKernel: u8, from_bit, KernelInfo {
        /// Copy (and convert) between any two layouts: block, `src`, `dst`.
        Copy = 0 => { name: "ttdrv.copy", ct_words: 0, rt_words: BLOCK_WORDS + 2 * ACCESSOR_WORDS },
        /// Element-wise add/sub/mul, optionally broadcasting one row: `op`, `bcast`; block, `a`, `b`, `out`.
        EltwiseBinary = 1 => {
            name: "ttdrv.eltwise_binary", ct_words: 2, rt_words: BLOCK_WORDS + 3 * ACCESSOR_WORDS
        },
        /// relu / gelu / exp / scale: `op`; block, `in`, `out`, `param`.
        EltwiseUnary = 2 => {
            name: "ttdrv.eltwise_unary", ct_words: 1, rt_words: BLOCK_WORDS + 2 * ACCESSOR_WORDS + 1
        },
        /// Matrix multiply with f32 accumulation: block, `a`, `b`, `out`.
        Matmul = 3 => { name: "ttdrv.matmul", ct_words: 0, rt_words: BLOCK_WORDS + 3 * ACCESSOR_WORDS },
        /// Fill with a constant: block, `out`, `value`.
        Fill = 4 => { name: "ttdrv.fill", ct_words: 0, rt_words: BLOCK_WORDS + ACCESSOR_WORDS + 1 },
    }
}

impl BuiltinKernel {
    /// The `KERNELS` mask of the whole catalog.
    pub const MASK: u32 = {
        let mut m = 0;
        let mut i = 0;
        while i < BuiltinKernel::ALL.len() {
            // A bit beyond the 32-bit register would not fit the mask.
            assert!((BuiltinKernel::ALL[i] as u8) < 32);
            m |= BuiltinKernel::ALL[i].bit();
            i += 1;
        }
        m
    };

    /// The name stored in the kernel image.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Looks a kernel up by image name.
    pub fn from_name(name: &str) -> Option<BuiltinKernel> {
        BuiltinKernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The `KERNELS` mask bit.
    pub const fn bit(self) -> u32 {
        1 << self as u8
    }

    /// Runtime argument words per core this kernel takes.
    pub const fn rt_words(self) -> usize {
        self.info().rt_words
    }

    /// Compile-time argument words this kernel takes.
    pub const fn ct_words(self) -> usize {
        self.info().ct_words
    }
}

wire_struct! {
    /// The fixed fields of a kernel image header, as stored (contract §8.1); [`encode_image`] and [`decode_image`]
    /// are the interface.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ImageFields {
        /// [`IMAGE_MAGIC`].
        pub magic: u32 @ 0,
        /// [`IMAGE_VERSION`].
        pub version: u16 @ 4,
        /// 0.
        pub flags: u16 @ 6,
        /// Bytes of the image, header included.
        pub total_len: u32 @ 8,
        /// Bytes of code.
        pub code_len: u32 @ 12,
        /// Kernel name, NUL padded.
        pub name: [u8; 48] @ 16,
    }
}

const _: () = assert!(ImageFields::END == IMAGE_HEADER && ImageFields::FIELDS[5].size == NAME_LEN);

/// Builds a kernel image (contract §8.1).
///
/// # Panics
/// If `name` does not leave room for its NUL terminator in [`NAME_LEN`] bytes, or the image exceeds 4 GiB; callers
/// check both first.
pub fn encode_image(name: &str, code: &[u8]) -> Vec<u8> {
    assert!(name.len() < NAME_LEN, "kernel name too long");
    let total = IMAGE_HEADER + code.len();
    let mut name_bytes = [0u8; NAME_LEN];
    name_bytes[..name.len()].copy_from_slice(name.as_bytes());
    let fields = ImageFields {
        magic: IMAGE_MAGIC,
        version: IMAGE_VERSION,
        flags: 0,
        total_len: u32::try_from(total).expect("kernel image over 4 GiB"),
        code_len: code.len() as u32,
        name: name_bytes,
    };
    let mut img = vec![0u8; total];
    fields.put(&mut img);
    img[IMAGE_HEADER..].copy_from_slice(code);
    img
}

/// A checked kernel image header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Total bytes.
    pub total_len: u32,
    /// Code bytes.
    pub code_len: u32,
    /// Kernel name.
    pub name: String,
}

/// Decodes and checks an image header; `None` is a `BAD_KERNEL` fault.
pub fn decode_image(hdr: &[u8; IMAGE_HEADER]) -> Option<ImageHeader> {
    let f = ImageFields::get(hdr).ok()?;
    if f.magic != IMAGE_MAGIC
        || f.version != IMAGE_VERSION
        || (f.total_len as u64) < IMAGE_HEADER as u64 + f.code_len as u64
    {
        return None;
    }
    let end = f.name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
    let name = std::str::from_utf8(&f.name[..end]).ok()?.to_owned();
    Some(ImageHeader { total_len: f.total_len, code_len: f.code_len, name })
}

/// One row of the element-type table.
#[derive(Debug)]
pub struct DTypeInfo {
    /// Bytes per element.
    pub size: usize,
}

table_enum! {
    /// Element types (contract §8.3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum DType: u32, from_u32, DTypeInfo {
        /// IEEE-754 binary32.
        Float32 = 0 => { size: 4 },
        /// bfloat16: the top half of a binary32.
        BFloat16 = 1 => { size: 2 },
    }
}

impl DType {
    /// Bytes per element.
    pub const fn size(self) -> usize {
        self.info().size
    }
}

/// Converts f32 to bfloat16 bits, rounding to nearest even (NaN stays NaN).
pub fn f32_to_bf16(v: f32) -> u16 {
    let bits = v.to_bits();
    if v.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let round = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// Converts bfloat16 bits to f32 (exact).
pub fn bf16_to_f32(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// One row of the layout table.
#[derive(Debug)]
pub struct LayoutInfo {
    /// How messages name it.
    pub name: &'static str,
}

table_enum! {
    /// Memory layouts (contract §8.3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Layout: u32, from_u32, LayoutInfo {
        /// Rows round-robin over every unit.
        Interleaved = 0 => { name: "interleaved" },
        /// Shards of whole rows.
        HeightSharded = 1 => { name: "height sharded" },
        /// Shards of whole columns.
        WidthSharded = 2 => { name: "width sharded" },
        /// Shards of row and column blocks.
        BlockSharded = 3 => { name: "block sharded" },
    }
}

/// Words of a tensor accessor (contract §8.3).
pub const ACCESSOR_WORDS: usize = 12;

/// The unit set holding a sharded tensor's shards (contract §8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShardGrid {
    /// An inclusive core rectangle, listed row-major.
    Cores {
        /// Left column.
        x0: u8,
        /// Top row.
        y0: u8,
        /// Right column.
        x1: u8,
        /// Bottom row.
        y1: u8,
    },
    /// An inclusive range of DRAM banks.
    Banks {
        /// First bank.
        first: u16,
        /// Last bank.
        last: u16,
    },
}

impl ShardGrid {
    /// Number of units in the grid (0 if malformed).
    pub fn len(&self) -> usize {
        match *self {
            ShardGrid::Cores { x0, y0, x1, y1 } => {
                if x1 < x0 || y1 < y0 {
                    0
                } else {
                    // In usize: a grid ending at core 255 (or bank 65535) does not fit its own type.
                    (x1 as usize - x0 as usize + 1) * (y1 as usize - y0 as usize + 1)
                }
            }
            ShardGrid::Banks { first, last } => {
                if last < first {
                    0
                } else {
                    last as usize - first as usize + 1
                }
            }
        }
    }

    /// True for a malformed grid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The unit at position `pos` of the grid's list, given the device's grid width.
    pub fn unit(&self, pos: usize, grid_x: usize) -> u16 {
        match *self {
            ShardGrid::Cores { x0, x1, y0, .. } => {
                let w = (x1 as usize + 1).saturating_sub(x0 as usize).max(1);
                let (x, y) = (x0 as usize + pos % w, y0 as usize + pos / w);
                (y * grid_x + x) as u16
            }
            ShardGrid::Banks { first, .. } => (first as usize + pos) as u16,
        }
    }

    fn encode(&self) -> u32 {
        match *self {
            ShardGrid::Cores { x0, y0, x1, y1 } => u32::from_le_bytes([x0, y0, x1, y1]),
            ShardGrid::Banks { first, last } => first as u32 | (last as u32) << 16,
        }
    }

    fn decode(mem: Memory, w: u32) -> ShardGrid {
        match mem {
            Memory::L1 => {
                let b = w.to_le_bytes();
                ShardGrid::Cores { x0: b[0], y0: b[1], x1: b[2], y1: b[3] }
            }
            Memory::Dram => ShardGrid::Banks { first: w as u16, last: (w >> 16) as u16 },
        }
    }
}

/// A tensor accessor: where a 2-D row-major tensor's elements live (contract §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Accessor {
    /// Memory.
    pub mem: Memory,
    /// Layout.
    pub layout: Layout,
    /// Element type.
    pub dtype: DType,
    /// Offset in every unit.
    pub addr: u32,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Bytes between consecutive pages of one unit.
    pub page_stride: u32,
    /// Rows per shard (sharded layouts).
    pub shard_rows: u32,
    /// Columns per shard (sharded layouts).
    pub shard_cols: u32,
    /// Units holding shards (sharded layouts).
    pub grid: ShardGrid,
    /// Column-major assignment of shards to units.
    pub col_major: bool,
}

/// Where a run of consecutive elements of one row lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Unit.
    pub unit: u16,
    /// Byte offset in the unit of the first element.
    pub offset: u64,
    /// Elements contiguous from the first one (within the same page).
    pub len: u32,
}

/// The unit counts an accessor's addressing depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// DRAM banks.
    pub dram_banks: u32,
    /// Grid width.
    pub grid_x: u32,
    /// Grid height.
    pub grid_y: u32,
    /// Bytes per bank.
    pub bank_size: u64,
    /// Bytes of L1 per core.
    pub l1_size: u64,
}

impl Geometry {
    /// Units a memory interleaves over.
    pub fn units(&self, mem: Memory) -> u32 {
        match mem {
            Memory::Dram => self.dram_banks,
            Memory::L1 => self.grid_x * self.grid_y,
        }
    }

    /// Bytes of one unit.
    pub fn unit_size(&self, mem: Memory) -> u64 {
        match mem {
            Memory::Dram => self.bank_size,
            Memory::L1 => self.l1_size,
        }
    }
}

impl Accessor {
    /// Encodes the 12 accessor words.
    pub fn to_words(&self) -> [u32; ACCESSOR_WORDS] {
        [
            self.mem as u32,
            self.layout as u32,
            self.dtype as u32,
            self.addr,
            self.rows,
            self.cols,
            self.page_stride,
            self.shard_rows,
            self.shard_cols,
            self.grid.encode(),
            self.col_major as u32,
            0,
        ]
    }

    /// Decodes accessor words; `None` for unknown enum values.
    pub fn from_words(w: &[u32]) -> Option<Accessor> {
        if w.len() < ACCESSOR_WORDS {
            return None;
        }
        let mem = Memory::from_u8(u8::try_from(w[0]).ok()?)?;
        Some(Accessor {
            mem,
            layout: Layout::from_u32(w[1])?,
            dtype: DType::from_u32(w[2])?,
            addr: w[3],
            rows: w[4],
            cols: w[5],
            page_stride: w[6],
            shard_rows: w[7],
            shard_cols: w[8],
            grid: ShardGrid::decode(mem, w[9]),
            col_major: match w[10] {
                0 => false,
                1 => true,
                _ => return None,
            },
        })
    }

    /// Bytes of one page: a row (interleaved) or a shard row (sharded).
    pub fn page_bytes(&self) -> u64 {
        let cols = if self.layout == Layout::Interleaved { self.cols } else { self.shard_cols };
        cols as u64 * self.dtype.size() as u64
    }

    /// Row blocks and column blocks of the shard grid.
    pub fn shard_blocks(&self) -> (u32, u32) {
        (self.rows.div_ceil(self.shard_rows.max(1)), self.cols.div_ceil(self.shard_cols.max(1)))
    }

    /// Bytes the tensor occupies in each unit it uses (its footprint above `addr`).
    pub fn footprint(&self, geo: &Geometry) -> u64 {
        match self.layout {
            Layout::Interleaved => {
                let units = geo.units(self.mem).max(1);
                self.rows.div_ceil(units) as u64 * self.page_stride as u64
            }
            _ => self.shard_rows as u64 * self.page_stride as u64,
        }
    }

    /// Checks the accessor is self-consistent and fits the device; the message says what is wrong.
    pub fn validate(&self, geo: &Geometry) -> Result<(), String> {
        if self.rows == 0 || self.cols == 0 {
            return Err(format!("tensor shape [{}, {}] has a zero dimension", self.rows, self.cols));
        }
        if (self.page_stride as u64) < self.page_bytes() {
            return Err(format!("page stride {} is below the page size {}", self.page_stride, self.page_bytes()));
        }
        if self.layout != Layout::Interleaved {
            if self.shard_rows == 0 || self.shard_cols == 0 {
                return Err("shard shape has a zero dimension".into());
            }
            let ok_shape = match self.layout {
                Layout::HeightSharded => self.shard_cols == self.cols,
                Layout::WidthSharded => self.shard_rows == self.rows,
                _ => true,
            };
            if !ok_shape {
                return Err(format!(
                    "shard shape [{}, {}] does not fit the {} layout of a [{}, {}] tensor",
                    self.shard_rows,
                    self.shard_cols,
                    self.layout.info().name,
                    self.rows,
                    self.cols
                ));
            }
            let (rb, cb) = self.shard_blocks();
            let need = rb as usize * cb as usize;
            if self.grid.len() < need {
                return Err(format!("{need} shards need {need} grid units, the grid has {}", self.grid.len()));
            }
            let in_range = match self.grid {
                ShardGrid::Cores { x1, y1, .. } => (x1 as u32) < geo.grid_x && (y1 as u32) < geo.grid_y,
                ShardGrid::Banks { last, .. } => (last as u32) < geo.dram_banks,
            };
            if !in_range || (self.mem == Memory::L1) != matches!(self.grid, ShardGrid::Cores { .. }) {
                return Err(format!("shard grid {:?} is outside the device", self.grid));
            }
        }
        let end = self.addr as u64 + self.footprint(geo);
        if end > geo.unit_size(self.mem) {
            return Err(format!(
                "tensor ends at offset {end:#x}, beyond the {:#x} bytes of a {} unit",
                geo.unit_size(self.mem),
                self.mem
            ));
        }
        Ok(())
    }

    /// Locates element (`r`, `c`) and how many elements of row `r` follow it contiguously. The accessor must be
    /// valid and the element inside the shape.
    pub fn locate(&self, geo: &Geometry, r: u32, c: u32) -> Run {
        let es = self.dtype.size() as u64;
        match self.layout {
            Layout::Interleaved => {
                let units = geo.units(self.mem);
                Run {
                    unit: (r % units) as u16,
                    offset: self.addr as u64 + (r / units) as u64 * self.page_stride as u64 + c as u64 * es,
                    len: self.cols - c,
                }
            }
            _ => {
                let (rb, cb) = self.shard_blocks();
                let (i, j) = (r / self.shard_rows, c / self.shard_cols);
                let pos = if self.col_major { j * rb + i } else { i * cb + j };
                let (k, cc) = (r % self.shard_rows, c % self.shard_cols);
                // In u64: the end of the last shard may lie past u32 when the shard width does not divide `cols`.
                let shard_end = ((j as u64 + 1) * self.shard_cols as u64).min(self.cols as u64) as u32;
                Run {
                    unit: self.grid.unit(pos as usize, geo.grid_x as usize),
                    offset: self.addr as u64 + k as u64 * self.page_stride as u64 + cc as u64 * es,
                    len: shard_end - c,
                }
            }
        }
    }
}

/// An output block `[r0, r1) × [c0, c1)` (contract §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Block {
    /// First row.
    pub r0: u32,
    /// End row.
    pub r1: u32,
    /// First column.
    pub c0: u32,
    /// End column.
    pub c1: u32,
}

impl Block {
    /// The [`BLOCK_WORDS`] words.
    pub fn to_words(&self) -> [u32; BLOCK_WORDS] {
        [self.r0, self.r1, self.c0, self.c1]
    }

    /// Decodes [`BLOCK_WORDS`] words.
    pub fn from_words(w: &[u32]) -> Block {
        Block { r0: w[0], r1: w[1], c0: w[2], c1: w[3] }
    }

    /// True when the block holds no element.
    pub fn is_empty(&self) -> bool {
        self.r0 >= self.r1 || self.c0 >= self.c1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GEO: Geometry = Geometry { dram_banks: 8, grid_x: 8, grid_y: 8, bank_size: 1 << 27, l1_size: 1 << 20 };

    #[test]
    fn every_kernel_round_trips_by_name_and_bit() {
        let mut mask = 0;
        for k in BuiltinKernel::ALL {
            assert_eq!(BuiltinKernel::from_name(k.name()), Some(k));
            assert_eq!(BuiltinKernel::from_bit(k as u8), Some(k));
            assert_eq!(k.bit().count_ones(), 1);
            assert_eq!(mask & k.bit(), 0, "{} shares a KERNELS bit", k.name());
            mask |= k.bit();
            assert!(k.name().len() < NAME_LEN, "{} does not fit an image header", k.name());
            assert!(k.rt_words() >= BLOCK_WORDS, "{} takes no block", k.name());
            // The name goes through an image and back.
            let img = encode_image(k.name(), &[]);
            let hdr = decode_image(img[..IMAGE_HEADER].try_into().unwrap()).unwrap();
            assert_eq!(BuiltinKernel::from_name(&hdr.name), Some(k));
        }
        assert_eq!(mask, BuiltinKernel::MASK);
        for b in 0..=u8::MAX {
            assert_eq!(BuiltinKernel::from_bit(b).is_some(), mask & 1u32.checked_shl(b as u32).unwrap_or(0) != 0);
        }
        assert_eq!(BuiltinKernel::from_name("ttdrv.nope"), None);
    }

    #[test]
    fn accessor_enums_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_u32(d as u32), Some(d));
        }
        for l in Layout::ALL {
            assert_eq!(Layout::from_u32(l as u32), Some(l));
        }
        assert_eq!(DType::from_u32(DType::ALL.len() as u32), None);
        assert_eq!(Layout::from_u32(Layout::ALL.len() as u32), None);
    }

    proptest! {
        #[test]
        fn images_round_trip(name in "[a-z._]{1,47}", code in prop::collection::vec(any::<u8>(), 0..200)) {
            let img = encode_image(&name, &code);
            prop_assert_eq!(img.len(), IMAGE_HEADER + code.len());
            let hdr = decode_image(img[..IMAGE_HEADER].try_into().unwrap()).unwrap();
            let want = ImageHeader { total_len: img.len() as u32, code_len: code.len() as u32, name };
            prop_assert_eq!(hdr, want);
            prop_assert_eq!(&img[IMAGE_HEADER..], &code[..]);
            prop_assert_eq!(&img[6..8], &[0, 0], "flags 0");
        }
    }

    #[test]
    fn image_round_trips() {
        let img = encode_image("ttdrv.matmul", &[1, 2, 3]);
        let hdr = decode_image(img[..IMAGE_HEADER].try_into().unwrap()).unwrap();
        assert_eq!(hdr.name, "ttdrv.matmul");
        assert_eq!(hdr.code_len, 3);
        let mut bad = img.clone();
        bad[0] ^= 1;
        assert!(decode_image(bad[..IMAGE_HEADER].try_into().unwrap()).is_none());
    }

    #[test]
    fn accessor_round_trips() {
        let a = Accessor {
            mem: Memory::L1,
            layout: Layout::BlockSharded,
            dtype: DType::BFloat16,
            addr: 0x2000,
            rows: 64,
            cols: 96,
            page_stride: 64,
            shard_rows: 32,
            shard_cols: 32,
            grid: ShardGrid::Cores { x0: 0, y0: 0, x1: 2, y1: 1 },
            col_major: false,
        };
        assert_eq!(Accessor::from_words(&a.to_words()), Some(a));
        a.validate(&GEO).unwrap();
        // Row 33, column 40 is in shard (1, 1): grid position 4 = core (1, 1) = unit 9.
        let run = a.locate(&GEO, 33, 40);
        assert_eq!(run.unit, 9);
        assert_eq!(run.offset, 0x2000 + 64 + 8 * 2);
        assert_eq!(run.len, 24);
    }

    #[test]
    fn interleaved_rows_round_robin() {
        let a = Accessor {
            mem: Memory::Dram,
            layout: Layout::Interleaved,
            dtype: DType::Float32,
            addr: 0x1000,
            rows: 20,
            cols: 10,
            page_stride: 64,
            shard_rows: 0,
            shard_cols: 0,
            grid: ShardGrid::Banks { first: 0, last: 0 },
            col_major: false,
        };
        a.validate(&GEO).unwrap();
        assert_eq!(a.locate(&GEO, 9, 2), Run { unit: 1, offset: 0x1000 + 64 + 8, len: 8 });
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0)), 1.0);
        // 1 + 2^-8 is halfway between two bf16 values: ties go to even (1.0).
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(bf16_to_f32(f32_to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
