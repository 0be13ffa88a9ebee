//! Kernel images, the built-in kernel catalog and tensor accessors (contract §8).

use super::Memory;
use super::wire::{Wire, table_enum, wire_struct};

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
        /// relu / gelu (tanh form) / exp / scale / gelu (erf form): `op`; block, `in`, `out`, `param`.
        EltwiseUnary = 2 => {
            name: "ttdrv.eltwise_unary", ct_words: 1, rt_words: BLOCK_WORDS + 2 * ACCESSOR_WORDS + 1
        },
        /// Matrix multiply with f32 accumulation: block, `a`, `b`, `out`.
        Matmul = 3 => { name: "ttdrv.matmul", ct_words: 0, rt_words: BLOCK_WORDS + 3 * ACCESSOR_WORDS },
        /// Fill with a constant: block, `out`, `value`.
        Fill = 4 => { name: "ttdrv.fill", ct_words: 0, rt_words: BLOCK_WORDS + ACCESSOR_WORDS + 1 },
        /// Layer normalization over each row, optionally of `in + res`: `residual`; block, `in`, `res`, `gamma`,
        /// `beta`, `out`, `eps`.
        LayerNorm = 5 => {
            name: "ttdrv.layernorm", ct_words: 1, rt_words: BLOCK_WORDS + 5 * ACCESSOR_WORDS + 1
        },
        /// Softmax over each row of `scale × in + mask`: `masked`; block, `in`, `mask`, `out`, `scale`.
        Softmax = 6 => { name: "ttdrv.softmax", ct_words: 1, rt_words: BLOCK_WORDS + 3 * ACCESSOR_WORDS + 1 },
        /// Batched matmul over matrices stacked in rows or cut into heads: `batch`, `heads`, `views`,
        /// `transpose_b`; block, `a`, `b`, `out`, `scale`.
        Bmm = 7 => { name: "ttdrv.bmm", ct_words: 4, rt_words: BLOCK_WORDS + 3 * ACCESSOR_WORDS + 1 },
        /// `a × b + bias` with an optional activation: `bias`, `act`; block, `a`, `b`, `bias`, `out`.
        Linear = 8 => { name: "ttdrv.linear", ct_words: 2, rt_words: BLOCK_WORDS + 4 * ACCESSOR_WORDS },
        /// Sum of up to three table rows picked by integer ids: `tables`; block, `ids`, `t0`, `t1`, `t2`, `out`.
        Embedding = 9 => { name: "ttdrv.embedding", ct_words: 1, rt_words: BLOCK_WORDS + 5 * ACCESSOR_WORDS },
        /// Masked mean over each group of rows, optionally L2-normalized: `normalize`; block, `in`, `mask`, `out`.
        MeanPool = 10 => { name: "ttdrv.mean_pool", ct_words: 1, rt_words: BLOCK_WORDS + 3 * ACCESSOR_WORDS },
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

/// One row of the tensor-layout table.
#[derive(Debug)]
pub struct TensorLayoutInfo {
    /// How messages name it.
    pub name: &'static str,
    /// The contract minor version that introduced it: a device of contract 1.x with a lower x reads the accessor
    /// word as reserved and would place elements row-major, so the driver refuses the layout on such a device.
    pub since_minor: u16,
}

table_enum! {
    /// How a tensor's elements are arranged in its pages (contract §8.3, §8.3.2): accessor word 11.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum TensorLayout: u32, from_u32, TensorLayoutInfo {
        /// A page is one row (interleaved) or one shard row (sharded).
        RowMajor = 0 => { name: "row-major", since_minor: 0 },
        /// A page is one 32×32 tile of four 16×16 faces; shapes are padded up to whole tiles (contract §8.3.2).
        Tile = 1 => { name: "tiled", since_minor: 1 },
    }
}

impl TensorLayout {
    /// How messages name it.
    pub const fn name(self) -> &'static str {
        self.info().name
    }
}

/// Implements [`Wire`] for table enums stored as a little-endian u32 word (the accessor's enum words).
macro_rules! wire_u32_enum {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const SIZE: usize = 4;
            #[inline(always)]
            fn put(self, b: &mut [u8]) {
                b.copy_from_slice(&(self as u32).to_le_bytes());
            }
            #[inline(always)]
            fn get(b: &[u8]) -> Option<Self> {
                <$t>::from_u32(u32::get(b)?)
            }
        }
    )*};
}
wire_u32_enum!(DType, Layout, TensorLayout);

/// Rows and columns of a tile (contract §8.3.2).
pub const TILE_DIM: u32 = 32;
/// Rows and columns of a face: a tile is four faces, each stored contiguously (contract §8.3.2).
pub const FACE_DIM: u32 = 16;
/// Elements of one tile.
pub const TILE_ELEMS: u32 = TILE_DIM * TILE_DIM;

/// Where element (`y`, `x`) of a tile (`y, x < 32`) is stored, in elements from the tile's first byte (contract
/// §8.3.2): the faces in the order top-left, top-right, bottom-left, bottom-right, each face row-major.
#[inline]
pub const fn tile_index(y: u32, x: u32) -> u32 {
    let face = (y / FACE_DIM) * 2 + x / FACE_DIM;
    face * FACE_DIM * FACE_DIM + (y % FACE_DIM) * FACE_DIM + x % FACE_DIM
}

/// Words of a tensor accessor (contract §8.3).
pub const ACCESSOR_WORDS: usize = 12;

wire_struct! {
    /// The accessor words as kernels receive them, word `i` at byte `4 × i` (contract §8.3). [`Accessor`] is the
    /// typed view; its `to_words` and `from_words` go through this layout, so the document's table and the code
    /// are checked against each other (`tests/contract_doc.rs`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AccessorFields {
        /// 0 DRAM, 1 L1.
        pub memory: u32 @ 0,
        /// Interleaved or sharded.
        pub layout: Layout @ 4,
        /// Element type.
        pub dtype: DType @ 8,
        /// Offset in every unit.
        pub addr: u32 @ 12,
        /// Rows.
        pub rows: u32 @ 16,
        /// Columns.
        pub cols: u32 @ 20,
        /// Bytes between consecutive pages of one unit.
        pub page_stride: u32 @ 24,
        /// Sharded: rows per shard.
        pub shard_rows: u32 @ 28,
        /// Sharded: columns per shard.
        pub shard_cols: u32 @ 32,
        /// Sharded: the units holding shards (§8.3.1).
        pub grid: u32 @ 36,
        /// Sharded: 0 row-major, 1 column-major assignment of shards to units.
        pub orientation: u32 @ 40,
        /// Row-major or tiled elements (§8.3.2); reserved (0, row-major) before contract 1.1.
        pub tensor_layout: TensorLayout @ 44,
    }
}

const _: () = assert!(AccessorFields::END == ACCESSOR_WORDS * 4);

/// The accessor word that holds the tensor's address (`addr`, contract §8.3): the word a trace patches to rebind a
/// buffer.
pub const ACCESSOR_ADDR_WORD: usize = 3;

const _: () = assert!(AccessorFields::FIELDS[ACCESSOR_ADDR_WORD].offset == ACCESSOR_ADDR_WORD * 4);
const _: () = assert!(AccessorFields::FIELDS[ACCESSOR_ADDR_WORD].size == 4);

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

/// A tensor accessor: where a 2-D tensor's elements live, row-major or tiled (contract §8.3).
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
    /// Row-major or tiled elements (contract §8.3.2).
    pub tensor_layout: TensorLayout,
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
    /// Encodes the accessor words (contract §8.3).
    pub fn to_words(&self) -> [u32; ACCESSOR_WORDS] {
        let f = AccessorFields {
            memory: self.mem as u32,
            layout: self.layout,
            dtype: self.dtype,
            addr: self.addr,
            rows: self.rows,
            cols: self.cols,
            page_stride: self.page_stride,
            shard_rows: self.shard_rows,
            shard_cols: self.shard_cols,
            grid: self.grid.encode(),
            orientation: self.col_major as u32,
            tensor_layout: self.tensor_layout,
        };
        let mut b = [0u8; ACCESSOR_WORDS * 4];
        f.put(&mut b);
        let mut w = [0u32; ACCESSOR_WORDS];
        for (w, c) in w.iter_mut().zip(b.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        w
    }

    /// Decodes accessor words; `None` for fewer than [`ACCESSOR_WORDS`] words or a value outside its table.
    pub fn from_words(w: &[u32]) -> Option<Accessor> {
        let w = w.get(..ACCESSOR_WORDS)?;
        let mut b = [0u8; ACCESSOR_WORDS * 4];
        for (c, w) in b.chunks_exact_mut(4).zip(w) {
            c.copy_from_slice(&w.to_le_bytes());
        }
        let f = AccessorFields::get(&b).ok()?;
        let mem = Memory::from_u8(u8::try_from(f.memory).ok()?)?;
        Some(Accessor {
            mem,
            layout: f.layout,
            dtype: f.dtype,
            addr: f.addr,
            rows: f.rows,
            cols: f.cols,
            page_stride: f.page_stride,
            shard_rows: f.shard_rows,
            shard_cols: f.shard_cols,
            grid: ShardGrid::decode(mem, f.grid),
            col_major: match f.orientation {
                0 => false,
                1 => true,
                _ => return None,
            },
            tensor_layout: f.tensor_layout,
        })
    }

    /// True for a tiled tensor (contract §8.3.2).
    pub fn is_tiled(&self) -> bool {
        self.tensor_layout == TensorLayout::Tile
    }

    /// Rows and columns including padding: the shape rounded up to whole tiles when tiled, else the shape
    /// (contract §8.3.2). In u64, so that no shape overflows.
    pub fn padded_shape(&self) -> (u64, u64) {
        match self.tensor_layout {
            TensorLayout::RowMajor => (self.rows as u64, self.cols as u64),
            TensorLayout::Tile => {
                let t = TILE_DIM as u64;
                ((self.rows as u64).div_ceil(t) * t, (self.cols as u64).div_ceil(t) * t)
            }
        }
    }

    /// Bytes of one page: a row (interleaved) or a shard row (sharded) when row-major; a tile when tiled.
    pub fn page_bytes(&self) -> u64 {
        let es = self.dtype.size() as u64;
        match (self.tensor_layout, self.layout) {
            (TensorLayout::Tile, _) => TILE_ELEMS as u64 * es,
            (TensorLayout::RowMajor, Layout::Interleaved) => self.cols as u64 * es,
            (TensorLayout::RowMajor, _) => self.shard_cols as u64 * es,
        }
    }

    /// Row blocks and column blocks of the shard grid.
    pub fn shard_blocks(&self) -> (u32, u32) {
        (self.rows.div_ceil(self.shard_rows.max(1)), self.cols.div_ceil(self.shard_cols.max(1)))
    }

    /// Pages one unit holds at most: of an interleaved tensor, its pages (rows or tiles) dealt round-robin over
    /// `units`; of a sharded one, the pages of one full shard.
    fn pages_per_unit(&self, units: u64) -> u64 {
        let t = TILE_DIM as u64;
        match (self.layout, self.tensor_layout) {
            (Layout::Interleaved, TensorLayout::RowMajor) => (self.rows as u64).div_ceil(units),
            (Layout::Interleaved, TensorLayout::Tile) => {
                let (pr, pc) = self.padded_shape();
                ((pr / t).saturating_mul(pc / t)).div_ceil(units)
            }
            (_, TensorLayout::RowMajor) => self.shard_rows as u64,
            (_, TensorLayout::Tile) => (self.shard_rows as u64 / t) * (self.shard_cols as u64 / t),
        }
    }

    /// Bytes the tensor occupies in each unit it uses (its footprint above `addr`), saturating for shapes no
    /// device can hold.
    pub fn footprint(&self, geo: &Geometry) -> u64 {
        let units = geo.units(self.mem).max(1) as u64;
        self.pages_per_unit(units).saturating_mul(self.page_stride as u64)
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
            if self.is_tiled() && (self.shard_rows % TILE_DIM != 0 || self.shard_cols % TILE_DIM != 0) {
                return Err(format!(
                    "shards of a tiled tensor hold whole tiles: shard shape [{}, {}] is not a multiple of \
                     [{TILE_DIM}, {TILE_DIM}]",
                    self.shard_rows, self.shard_cols
                ));
            }
            // Height shards hold whole (padded) rows, width shards whole (padded) columns.
            let (pr, pc) = self.padded_shape();
            let ok_shape = match self.layout {
                Layout::HeightSharded => self.shard_cols as u64 == pc,
                Layout::WidthSharded => self.shard_rows as u64 == pr,
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
        let end = (self.addr as u64).saturating_add(self.footprint(geo));
        if end > geo.unit_size(self.mem) {
            return Err(format!(
                "tensor ends at offset {end:#x}, beyond the {:#x} bytes of a {} unit",
                geo.unit_size(self.mem),
                self.mem
            ));
        }
        Ok(())
    }

    /// Locates element (`r`, `c`) and how many elements of row `r` follow it contiguously: to the end of its page
    /// (row-major) or of its face row (tiled), never past the last column. The accessor must be valid and the
    /// element inside the shape.
    pub fn locate(&self, geo: &Geometry, r: u32, c: u32) -> Run {
        let mut run = self.locate_padded(geo, r, c);
        run.len = run.len.min(self.cols - c);
        run
    }

    /// As [`Accessor::locate`], for any element of the padded shape ([`Accessor::padded_shape`]): a tiled tensor's
    /// padding has a place too (contract §8.3.2). The run ends at the end of the page (row-major) or face row
    /// (tiled), padding included.
    pub fn locate_padded(&self, geo: &Geometry, r: u32, c: u32) -> Run {
        let es = self.dtype.size() as u64;
        let stride = self.page_stride as u64;
        let in_tile = |y: u32, x: u32| tile_index(y % TILE_DIM, x % TILE_DIM) as u64 * es;
        let face_rest = FACE_DIM - c % FACE_DIM;
        match (self.layout, self.tensor_layout) {
            (Layout::Interleaved, TensorLayout::RowMajor) => {
                let units = geo.units(self.mem);
                Run {
                    unit: (r % units) as u16,
                    offset: self.addr as u64 + (r / units) as u64 * stride + c as u64 * es,
                    len: self.cols - c,
                }
            }
            (Layout::Interleaved, TensorLayout::Tile) => {
                // Tile t, row-major over the tile grid, is page t (§4.2).
                let units = geo.units(self.mem) as u64;
                let tiles_per_row = self.cols.div_ceil(TILE_DIM) as u64;
                let t = (r / TILE_DIM) as u64 * tiles_per_row + (c / TILE_DIM) as u64;
                Run {
                    unit: (t % units) as u16,
                    offset: self.addr as u64 + (t / units) * stride + in_tile(r, c),
                    len: face_rest,
                }
            }
            (_, layout) => {
                let (rb, cb) = self.shard_blocks();
                let (i, j) = (r / self.shard_rows, c / self.shard_cols);
                let pos = if self.col_major { j * rb + i } else { i * cb + j };
                let unit = self.grid.unit(pos as usize, geo.grid_x as usize);
                let (k, cc) = (r % self.shard_rows, c % self.shard_cols);
                match layout {
                    TensorLayout::RowMajor => {
                        // In u64: the end of the last shard may lie past u32 when the shard width does not divide
                        // `cols`.
                        let shard_end = ((j as u64 + 1) * self.shard_cols as u64).min(self.cols as u64) as u32;
                        Run { unit, offset: self.addr as u64 + k as u64 * stride + cc as u64 * es, len: shard_end - c }
                    }
                    TensorLayout::Tile => {
                        // Inside the shard, its tiles row-major are its pages.
                        let page = (k / TILE_DIM) as u64 * (self.shard_cols / TILE_DIM) as u64 + (cc / TILE_DIM) as u64;
                        Run { unit, offset: self.addr as u64 + page * stride + in_tile(k, cc), len: face_rest }
                    }
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
    fn the_accessor_address_word_is_the_addr_field() {
        assert_eq!(AccessorFields::FIELDS[ACCESSOR_ADDR_WORD].name, "addr");
    }

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
            tensor_layout: TensorLayout::RowMajor,
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
            tensor_layout: TensorLayout::RowMajor,
        };
        a.validate(&GEO).unwrap();
        assert_eq!(a.locate(&GEO, 9, 2), Run { unit: 1, offset: 0x1000 + 64 + 8, len: 8 });
    }

    #[test]
    fn accessor_words_round_trip_for_every_table_value() {
        let base = Accessor {
            mem: Memory::Dram,
            layout: Layout::Interleaved,
            dtype: DType::Float32,
            addr: 0x40,
            rows: 3,
            cols: 5,
            page_stride: 4096,
            shard_rows: 0,
            shard_cols: 0,
            grid: ShardGrid::Banks { first: 0, last: 0 },
            col_major: false,
            tensor_layout: TensorLayout::RowMajor,
        };
        for t in TensorLayout::ALL {
            for l in Layout::ALL {
                for d in DType::ALL {
                    let a = Accessor { tensor_layout: t, layout: l, dtype: d, ..base };
                    let w = a.to_words();
                    assert_eq!(w[11], t as u32, "tensor layout is word 11");
                    assert_eq!((w[1], w[2]), (l as u32, d as u32));
                    assert_eq!(Accessor::from_words(&w), Some(a));
                }
            }
        }
        // A word outside its table, or too few words, is no accessor.
        let mut w = base.to_words();
        w[11] = TensorLayout::ALL.len() as u32;
        assert_eq!(Accessor::from_words(&w), None);
        assert_eq!(Accessor::from_words(&base.to_words()[..11]), None);
        // Before contract 1.1 word 11 was reserved and written as 0: such accessors are row-major.
        let mut w = base.to_words();
        w[11] = 0;
        assert_eq!(Accessor::from_words(&w).map(|a| a.tensor_layout), Some(TensorLayout::RowMajor));
    }

    /// The in-tile order written out independently of `tile_index`: four 16×16 faces, top-left, top-right,
    /// bottom-left, bottom-right, each row-major.
    #[test]
    fn tile_index_is_four_row_major_faces() {
        let mut seen = vec![false; TILE_ELEMS as usize];
        for y in 0..32 {
            for x in 0..32 {
                let face = match (y < 16, x < 16) {
                    (true, true) => 0,
                    (true, false) => 1,
                    (false, true) => 2,
                    (false, false) => 3,
                };
                let want = face * 256 + (y % 16) * 16 + x % 16;
                assert_eq!(tile_index(y, x), want, "element ({y}, {x})");
                assert!(!std::mem::replace(&mut seen[want as usize], true));
            }
        }
        assert_eq!((tile_index(0, 15), tile_index(0, 16), tile_index(1, 0), tile_index(16, 0)), (15, 256, 16, 512));
    }

    fn tiled(layout: Layout, rows: u32, cols: u32, dtype: DType) -> Accessor {
        Accessor {
            mem: Memory::Dram,
            layout,
            dtype,
            addr: 0x1000,
            rows,
            cols,
            page_stride: TILE_ELEMS * dtype.size() as u32,
            shard_rows: 0,
            shard_cols: 0,
            grid: ShardGrid::Banks { first: 0, last: 7 },
            col_major: false,
            tensor_layout: TensorLayout::Tile,
        }
    }

    #[test]
    fn tiled_interleaved_tiles_round_robin_and_pad() {
        // [50, 70] pads to [64, 96]: 2 x 3 tiles of 4 KiB over 8 banks, one tile per bank.
        let a = tiled(Layout::Interleaved, 50, 70, DType::Float32);
        a.validate(&GEO).unwrap();
        assert_eq!(a.padded_shape(), (64, 96));
        assert_eq!(a.page_bytes(), 4096);
        assert_eq!(a.footprint(&GEO), 4096);
        // (33, 40): tile (1, 1) = tile 4, in-tile (1, 8) = element 24 of face 0; 8 elements to the face row's end.
        assert_eq!(a.locate(&GEO, 33, 40), Run { unit: 4, offset: 0x1000 + 24 * 4, len: 8 });
        // (49, 69): tile (1, 2) = tile 5, in-tile (17, 5) = face 2, element 512 + 16 + 5; the last column.
        assert_eq!(a.locate(&GEO, 49, 69), Run { unit: 5, offset: 0x1000 + 533 * 4, len: 1 });
        // Padding has a place: (63, 95) is the last element of tile 5.
        assert_eq!(a.locate_padded(&GEO, 63, 95), Run { unit: 5, offset: 0x1000 + 1023 * 4, len: 1 });
        assert_eq!(a.locate_padded(&GEO, 49, 70), Run { unit: 5, offset: 0x1000 + 534 * 4, len: 10 });
        // With more tiles than banks, tile 8 + t is the second page of bank t.
        let big = tiled(Layout::Interleaved, 64, 320, DType::BFloat16);
        big.validate(&GEO).unwrap();
        assert_eq!(big.footprint(&GEO), 3 * 2048);
        let run = big.locate(&GEO, 32, 64); // tile (1, 2) = tile 12: bank 4, page 1
        assert_eq!((run.unit, run.offset), (4, 0x1000 + 2048));
    }

    #[test]
    fn tiled_shards_hold_whole_tiles_row_major() {
        // [64, 96] block sharded in [32, 64] shards over banks 0-3: shard (1, 1) holds one column of tiles.
        let a = Accessor {
            layout: Layout::BlockSharded,
            shard_rows: 32,
            shard_cols: 64,
            grid: ShardGrid::Banks { first: 0, last: 3 },
            ..tiled(Layout::BlockSharded, 64, 96, DType::BFloat16)
        };
        a.validate(&GEO).unwrap();
        assert_eq!(a.footprint(&GEO), 2 * 2048);
        // (10, 40): shard (0, 0) = bank 0, its tile (0, 1) = page 1, in-tile (10, 8).
        assert_eq!(a.locate(&GEO, 10, 40), Run { unit: 0, offset: 0x1000 + 2048 + (10 * 16 + 8) * 2, len: 8 });
        // (40, 70): shard (1, 1) = bank 3, its tile (0, 0) = page 0, in-tile (8, 6).
        assert_eq!(a.locate(&GEO, 40, 70), Run { unit: 3, offset: 0x1000 + (8 * 16 + 6) * 2, len: 10 });
        // Shards that are not whole tiles, and height shards narrower than the padded width, are refused.
        let bad = Accessor { shard_rows: 16, ..a };
        assert!(bad.validate(&GEO).unwrap_err().contains("whole tiles"));
        let h = Accessor { layout: Layout::HeightSharded, shard_rows: 32, shard_cols: 70, cols: 70, ..a };
        assert!(h.validate(&GEO).unwrap_err().contains("whole tiles"));
        let h = Accessor { shard_cols: 96, ..h };
        h.validate(&GEO).unwrap();
        let short = Accessor { page_stride: 2047, ..a };
        assert!(short.validate(&GEO).unwrap_err().contains("below the page size 2048"));
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
