//! ttnn's value types: data types, layouts, shapes, core coordinates, shard specs and memory configs — and
//! [`buffer_spec`], the one place where a ttnn tensor description becomes the driver's [`BufferSpec`].

use crate::errors::invalid;
use pyo3::prelude::*;
use pyo3::types::{PyAny, PyIterator, PyTuple};
use ttdrv::contract::kernel::{DType, Layout as DevLayout, ShardGrid, TILE_DIM, TensorLayout};
use ttdrv::device::BufferType as DevBufferType;
use ttdrv::{BufferSpec, MemoryConfig as DevMemoryConfig, ShardSpec as DevShardSpec};

/// Element type of a tensor (`ttnn.DataType`): `ttdrv.float32` and `ttdrv.bfloat16`.
///
/// bfloat16 host data is given as float32 arrays (converted, rounding to nearest even) or as uint16 arrays of
/// bfloat16 bits (used in place); `to_numpy()` returns bfloat16 tensors as float32 (exact).
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// IEEE-754 binary32.
    #[pyo3(name = "FLOAT32")]
    Float32,
    /// bfloat16: the top 16 bits of a binary32.
    #[pyo3(name = "BFLOAT16")]
    BFloat16,
}

impl DataType {
    /// The driver's element type.
    pub fn dev(self) -> DType {
        match self {
            DataType::Float32 => DType::Float32,
            DataType::BFloat16 => DType::BFloat16,
        }
    }

    /// From the driver's element type.
    pub fn from_dev(d: DType) -> DataType {
        match d {
            DType::Float32 => DataType::Float32,
            DType::BFloat16 => DataType::BFloat16,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        self.dev().size()
    }

    /// ttnn's lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Float32 => "float32",
            DataType::BFloat16 => "bfloat16",
        }
    }
}

#[pymethods]
impl DataType {
    pub fn __repr__(&self) -> String {
        format!("DataType.{}", self.name().to_uppercase())
    }
}

/// Element arrangement of a tensor (`ttnn.Layout`): `ttdrv.ROW_MAJOR_LAYOUT` or `ttdrv.TILE_LAYOUT`.
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Rows of elements, one after another.
    #[pyo3(name = "ROW_MAJOR")]
    RowMajor,
    /// 32x32 tiles of four 16x16 faces, the shape padded up to whole tiles on the device
    /// (docs/device-interface.md §8.3.2). Host data stays dense row-major; transfers tilize and untilize.
    #[pyo3(name = "TILE")]
    Tile,
}

impl Layout {
    /// The driver's tensor layout.
    pub fn dev(self) -> TensorLayout {
        match self {
            Layout::RowMajor => TensorLayout::RowMajor,
            Layout::Tile => TensorLayout::Tile,
        }
    }

    /// From the driver's tensor layout.
    pub fn from_dev(l: TensorLayout) -> Layout {
        match l {
            TensorLayout::RowMajor => Layout::RowMajor,
            TensorLayout::Tile => Layout::Tile,
        }
    }
}

#[pymethods]
impl Layout {
    fn __repr__(&self) -> &'static str {
        match self {
            Layout::RowMajor => "Layout.ROW_MAJOR",
            Layout::Tile => "Layout.TILE",
        }
    }
}

/// Where a tensor lives (`ttnn.BufferType`).
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// Device DRAM.
    #[pyo3(name = "DRAM")]
    Dram,
    /// Core L1.
    #[pyo3(name = "L1")]
    L1,
    /// The per-core L1 region reserved with `open_device(l1_small_size=...)`.
    #[pyo3(name = "L1_SMALL")]
    L1Small,
}

impl BufferType {
    fn dev(self) -> DevBufferType {
        match self {
            BufferType::Dram => DevBufferType::Dram,
            BufferType::L1 => DevBufferType::L1,
            BufferType::L1Small => DevBufferType::L1Small,
        }
    }

    fn from_dev(t: DevBufferType) -> BufferType {
        match t {
            DevBufferType::Dram => BufferType::Dram,
            DevBufferType::L1 => BufferType::L1,
            DevBufferType::L1Small => BufferType::L1Small,
        }
    }
}

/// How a tensor's pages are spread over banks or cores (`ttnn.TensorMemoryLayout`).
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorMemoryLayout {
    /// Rows round-robin over every bank or core.
    #[pyo3(name = "INTERLEAVED")]
    Interleaved,
    /// Shards of whole rows.
    #[pyo3(name = "HEIGHT_SHARDED")]
    HeightSharded,
    /// Shards of whole columns.
    #[pyo3(name = "WIDTH_SHARDED")]
    WidthSharded,
    /// Shards of row and column blocks.
    #[pyo3(name = "BLOCK_SHARDED")]
    BlockSharded,
}

impl TensorMemoryLayout {
    fn dev(self) -> DevLayout {
        match self {
            TensorMemoryLayout::Interleaved => DevLayout::Interleaved,
            TensorMemoryLayout::HeightSharded => DevLayout::HeightSharded,
            TensorMemoryLayout::WidthSharded => DevLayout::WidthSharded,
            TensorMemoryLayout::BlockSharded => DevLayout::BlockSharded,
        }
    }

    fn from_dev(l: DevLayout) -> TensorMemoryLayout {
        match l {
            DevLayout::Interleaved => TensorMemoryLayout::Interleaved,
            DevLayout::HeightSharded => TensorMemoryLayout::HeightSharded,
            DevLayout::WidthSharded => TensorMemoryLayout::WidthSharded,
            DevLayout::BlockSharded => TensorMemoryLayout::BlockSharded,
        }
    }
}

/// Order in which shards are assigned to the grid (`ttnn.ShardOrientation`).
#[pyclass(eq, eq_int, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShardOrientation {
    /// Row by row over the grid.
    #[pyo3(name = "ROW_MAJOR")]
    RowMajor,
    /// Column by column over the grid.
    #[pyo3(name = "COL_MAJOR")]
    ColMajor,
}

/// A core (or, for DRAM shard grids, a bank: `x` is the bank and `y` is 0), `ttnn.CoreCoord`.
#[pyclass(eq, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoreCoord {
    /// Column.
    #[pyo3(get)]
    pub x: u32,
    /// Row.
    #[pyo3(get)]
    pub y: u32,
}

#[pymethods]
impl CoreCoord {
    #[new]
    fn new(x: u32, y: u32) -> Self {
        CoreCoord { x, y }
    }

    pub fn __repr__(&self) -> String {
        format!("CoreCoord(x={}, y={})", self.x, self.y)
    }
}

/// An inclusive rectangle of cores from `start` (top-left) to `end` (bottom-right), `ttnn.CoreRange`.
#[pyclass(eq, hash, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoreRange {
    /// Top-left core.
    #[pyo3(get)]
    pub start: CoreCoord,
    /// Bottom-right core.
    #[pyo3(get)]
    pub end: CoreCoord,
}

#[pymethods]
impl CoreRange {
    #[new]
    fn new(start: CoreCoord, end: CoreCoord) -> Self {
        CoreRange { start, end }
    }

    /// Cores in the rectangle.
    fn num_cores(&self) -> u64 {
        let w = (self.end.x as u64 + 1).saturating_sub(self.start.x as u64);
        let h = (self.end.y as u64 + 1).saturating_sub(self.start.y as u64);
        w * h
    }

    pub fn __repr__(&self) -> String {
        format!("CoreRange({}, {})", self.start.__repr__(), self.end.__repr__())
    }
}

/// A set of core ranges, `ttnn.CoreRangeSet`. The device shards over one rectangle, so a set used in a shard spec
/// must hold exactly one range.
#[pyclass(eq, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreRangeSet {
    /// The ranges, in the order given.
    pub ranges: Vec<CoreRange>,
}

#[pymethods]
impl CoreRangeSet {
    /// `ranges`: a CoreRange, or any iterable (set, list) of CoreRange.
    #[new]
    fn new(ranges: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(r) = ranges.extract::<CoreRange>() {
            return Ok(CoreRangeSet { ranges: vec![r] });
        }
        let mut out = Vec::new();
        for r in PyIterator::from_object(ranges)? {
            out.push(r?.extract::<CoreRange>()?);
        }
        Ok(CoreRangeSet { ranges: out })
    }

    /// The ranges, as a list.
    #[getter(ranges)]
    fn ranges_list(&self) -> Vec<CoreRange> {
        self.ranges.clone()
    }

    /// Cores in all ranges.
    fn num_cores(&self) -> u64 {
        self.ranges.iter().map(|r| r.num_cores()).sum()
    }

    pub fn __repr__(&self) -> String {
        let r: Vec<String> = self.ranges.iter().map(|r| r.__repr__()).collect();
        format!("CoreRangeSet([{}])", r.join(", "))
    }
}

/// How a sharded tensor is cut (`ttnn.ShardSpec`): the grid holding the shards, the shape of one shard (rows,
/// columns after folding every dimension but the last into rows) and the order shards are assigned to the grid.
#[pyclass(eq, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// The grid (cores for L1; for DRAM, banks as `CoreCoord(bank, 0)`).
    #[pyo3(get)]
    pub grid: CoreRangeSet,
    /// Rows and columns of one shard.
    pub shape: [u32; 2],
    /// Order of shards over the grid.
    #[pyo3(get)]
    pub orientation: ShardOrientation,
}

#[pymethods]
impl ShardSpec {
    #[new]
    #[pyo3(signature = (grid, shard_shape, shard_orientation = ShardOrientation::RowMajor))]
    fn new(grid: CoreRangeSet, shard_shape: (u32, u32), shard_orientation: ShardOrientation) -> Self {
        ShardSpec { grid, shape: [shard_shape.0, shard_shape.1], orientation: shard_orientation }
    }

    /// Rows and columns of one shard.
    #[getter]
    fn shape(&self) -> (u32, u32) {
        (self.shape[0], self.shape[1])
    }

    pub fn __repr__(&self) -> String {
        format!(
            "ShardSpec(grid={}, shape=[{}, {}], orientation={:?})",
            self.grid.__repr__(),
            self.shape[0],
            self.shape[1],
            self.orientation
        )
    }
}

/// Where and how a tensor is stored (`ttnn.MemoryConfig`): `MemoryConfig(memory_layout, buffer_type, shard_spec)`.
/// `ttdrv.DRAM_MEMORY_CONFIG` and `ttdrv.L1_MEMORY_CONFIG` are the interleaved ones; sharded layouts need a
/// shard spec (see also `ttdrv.create_sharded_memory_config`).
#[pyclass(eq, frozen, from_py_object, module = "ttdrv")]
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryConfig {
    /// The driver's memory config, checked against everything but the device when the object is made.
    pub dev: DevMemoryConfig,
    /// The shard spec as given (for `shard_spec`).
    pub shard_spec: Option<ShardSpec>,
}

impl MemoryConfig {
    /// The Python object for a driver memory config (of a tensor the driver made).
    pub fn from_dev(dev: DevMemoryConfig) -> MemoryConfig {
        let shard_spec = dev.shard.map(|s| {
            let range = match s.grid {
                ShardGrid::Cores { x0, y0, x1, y1 } => CoreRange {
                    start: CoreCoord { x: x0 as u32, y: y0 as u32 },
                    end: CoreCoord { x: x1 as u32, y: y1 as u32 },
                },
                ShardGrid::Banks { first, last } => {
                    CoreRange { start: CoreCoord { x: first as u32, y: 0 }, end: CoreCoord { x: last as u32, y: 0 } }
                }
            };
            ShardSpec {
                grid: CoreRangeSet { ranges: vec![range] },
                shape: s.shape,
                orientation: if s.col_major { ShardOrientation::ColMajor } else { ShardOrientation::RowMajor },
            }
        });
        MemoryConfig { dev, shard_spec }
    }
}

/// The driver's shard grid for a ttnn grid of buffer type `t`.
fn shard_grid(t: BufferType, grid: &CoreRangeSet) -> PyResult<ShardGrid> {
    let [r] = grid.ranges.as_slice() else {
        return Err(invalid(format!(
            "shard grid {}: the device shards over one rectangle of cores (or one range of DRAM banks), so the \
             CoreRangeSet must hold exactly one CoreRange; it holds {}",
            grid.__repr__(),
            grid.ranges.len()
        )));
    };
    let (s, e) = (r.start, r.end);
    match t {
        BufferType::Dram => {
            if s.y != 0 || e.y != 0 {
                return Err(invalid(format!(
                    "DRAM shard grid {}: DRAM banks are a row: give CoreRange(CoreCoord(first_bank, 0), \
                     CoreCoord(last_bank, 0))",
                    r.__repr__()
                )));
            }
            let bank = |v: u32| {
                u16::try_from(v)
                    .map_err(|_| invalid(format!("DRAM shard grid {}: bank {v} is too large", r.__repr__())))
            };
            Ok(ShardGrid::Banks { first: bank(s.x)?, last: bank(e.x)? })
        }
        BufferType::L1 | BufferType::L1Small => {
            let c = |v: u32| {
                u8::try_from(v).map_err(|_| {
                    invalid(format!("shard grid {}: core coordinate {v} is outside any device grid", r.__repr__()))
                })
            };
            Ok(ShardGrid::Cores { x0: c(s.x)?, y0: c(s.y)?, x1: c(e.x)?, y1: c(e.y)? })
        }
    }
}

#[pymethods]
impl MemoryConfig {
    #[new]
    #[pyo3(signature = (memory_layout = TensorMemoryLayout::Interleaved, buffer_type = BufferType::Dram, shard_spec = None))]
    fn new(
        memory_layout: TensorMemoryLayout,
        buffer_type: BufferType,
        shard_spec: Option<ShardSpec>,
    ) -> PyResult<MemoryConfig> {
        let shard = match (&shard_spec, memory_layout) {
            (None, TensorMemoryLayout::Interleaved) => None,
            (Some(_), TensorMemoryLayout::Interleaved) => {
                return Err(invalid(
                    "an INTERLEAVED memory config takes no shard spec; use a sharded memory_layout or drop the spec",
                ));
            }
            (None, l) => {
                return Err(invalid(format!(
                    "{l:?} needs a shard spec: MemoryConfig(layout, buffer_type, ShardSpec(...))"
                )));
            }
            (Some(s), _) => Some(DevShardSpec {
                grid: shard_grid(buffer_type, &s.grid)?,
                shape: s.shape,
                col_major: s.orientation == ShardOrientation::ColMajor,
            }),
        };
        let dev = DevMemoryConfig { buffer_type: buffer_type.dev(), layout: memory_layout.dev(), shard };
        Ok(MemoryConfig { dev, shard_spec })
    }

    /// DRAM, L1 or L1_SMALL.
    #[getter]
    fn buffer_type(&self) -> BufferType {
        BufferType::from_dev(self.dev.buffer_type)
    }

    /// Interleaved or one of the sharded layouts.
    #[getter]
    fn memory_layout(&self) -> TensorMemoryLayout {
        TensorMemoryLayout::from_dev(self.dev.layout)
    }

    /// The shard spec, or None for interleaved configs.
    #[getter]
    fn shard_spec(&self) -> Option<ShardSpec> {
        self.shard_spec.clone()
    }

    /// True for sharded layouts.
    fn is_sharded(&self) -> bool {
        self.dev.shard.is_some()
    }

    pub fn __repr__(&self) -> String {
        let mut s =
            format!("MemoryConfig(memory_layout={:?}, buffer_type={:?}", self.memory_layout(), self.buffer_type());
        if let Some(sh) = &self.shard_spec {
            s.push_str(&format!(", shard_spec={}", sh.__repr__()));
        }
        s.push(')');
        s
    }
}

/// A tensor shape of 1 to 4 dimensions. The device stores 2-D buffers: every dimension but the last is folded into
/// rows (`[N, C, H, W]` is `N*C*H` rows of `W` columns), as ttnn does for row-major tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    dims: [u32; 4],
    len: u8,
}

impl Shape {
    /// Checks `dims` (1 to 4 of them, each at least 1, rows within 32 bits).
    pub fn new(dims: &[u64]) -> PyResult<Shape> {
        if dims.is_empty() || dims.len() > 4 {
            return Err(invalid(format!(
                "shape {dims:?} has {} dimensions; ttdrv tensors have 1 to 4 (every one but the last is folded into \
                 rows)",
                dims.len()
            )));
        }
        let mut d = [1u32; 4];
        let mut rows: u64 = 1;
        for (i, &v) in dims.iter().enumerate() {
            if v == 0 {
                return Err(invalid(format!(
                    "shape {dims:?} has a zero dimension; every dimension must be at least 1"
                )));
            }
            d[i] = u32::try_from(v).map_err(|_| invalid(format!("shape {dims:?}: dimension {v} is too large")))?;
            if i + 1 < dims.len() {
                rows = rows.saturating_mul(v);
            }
        }
        if rows > u32::MAX as u64 {
            return Err(invalid(format!(
                "shape {dims:?} folds into {rows} rows; a tensor holds at most {} rows",
                u32::MAX
            )));
        }
        Ok(Shape { dims: d, len: dims.len() as u8 })
    }

    /// From any Python sequence of ints.
    pub fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Shape> {
        let dims: Vec<u64> = obj.extract().map_err(|_| {
            invalid(format!(
                "shape {}: give a sequence of 1 to 4 positive ints",
                obj.repr().map_or("?".into(), |r| r.to_string())
            ))
        })?;
        Shape::new(&dims)
    }

    /// The 2-D shape `rows x cols` of the same data.
    pub fn matrix(rows: u32, cols: u32) -> Shape {
        Shape { dims: [rows, cols, 1, 1], len: 2 }
    }

    /// The dimensions.
    pub fn dims(&self) -> &[u32] {
        &self.dims[..self.len as usize]
    }

    /// Rows after folding every dimension but the last.
    pub fn rows(&self) -> u32 {
        self.dims()[..self.len as usize - 1].iter().product()
    }

    /// The last dimension.
    pub fn cols(&self) -> u32 {
        self.dims[self.len as usize - 1]
    }

    /// Elements.
    pub fn volume(&self) -> u64 {
        self.rows() as u64 * self.cols() as u64
    }

    /// This shape with its last dimension replaced.
    pub fn with_cols(&self, cols: u32) -> Shape {
        let mut s = *self;
        s.dims[s.len as usize - 1] = cols;
        s
    }

    /// As a Python tuple.
    pub fn py_tuple<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.dims())
    }
}

/// The driver's buffer spec of a ttnn tensor description: the one place a ttnn layout and shape map onto the
/// device. Every dimension but the last folds into rows; a tiled tensor's folded `rows x cols` is then padded up to
/// whole 32x32 tiles by the driver (docs/device-interface.md §8.3.2), host data staying dense of the logical shape.
pub fn buffer_spec(shape: &Shape, dtype: DataType, layout: Layout, mem: &MemoryConfig) -> PyResult<BufferSpec> {
    Ok(BufferSpec::new(shape.rows(), shape.cols(), dtype.dev(), mem.dev).with_layout(layout.dev()))
}

/// ttnn's padded shape of a tensor: for `TILE_LAYOUT` the last two dimensions rounded up to multiples of 32 (of a
/// 1-D shape, its one dimension), for `ROW_MAJOR_LAYOUT` the shape. The device pads the folded rows instead (see
/// docs/python.md, "Layouts"); the two agree whenever the dimensions before the last two are all 1 or the
/// second-to-last is a multiple of 32.
pub fn padded_dims(shape: &Shape, layout: Layout) -> Vec<u64> {
    let mut d: Vec<u64> = shape.dims().iter().map(|&v| v as u64).collect();
    if layout == Layout::Tile {
        let n = d.len();
        for v in &mut d[n.saturating_sub(2)..] {
            *v = v.div_ceil(TILE_DIM as u64) * TILE_DIM as u64;
        }
    }
    d
}
