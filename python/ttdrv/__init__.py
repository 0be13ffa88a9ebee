"""ttdrv from Python: tt-metal's ttnn API for Metal Trace and multiple command queues, on the ttdrv driver.

Write ``import ttdrv as ttnn`` and the programming examples of tt-metal's guide "Advanced Performance
Optimizations for Models" run unchanged but for the device opening::

    import ttdrv as ttnn
    device = ttnn.open_device(device_id=0, trace_region_size=800768, num_command_queues=2)

The device is the emulated one unless a ttdrv device is bound to vfio-pci (``selector=`` or ``$TTDRV_DEVICE``
choose explicitly, e.g. ``selector="emu:jitter=7"``). Tensors have 1 to 4 dimensions; the device stores them as
rows x columns, every dimension but the last folded into rows. docs/python.md lists what maps to what.

The driver's log records go to the ``logging`` logger ``"ttdrv"``; errors are ``ttdrv.Error`` subclasses.
"""

from __future__ import annotations

import enum as _enum
import logging as _logging
import weakref as _weakref
from dataclasses import dataclass as _dataclass

import numpy as _np

from . import _ttdrv
from ._ttdrv import (  # noqa: F401  (re-exported)
    MLP,
    BufferType,
    ClosedError,
    ContentsUndefinedError,
    CoreCoord,
    CoreRange,
    CoreRangeSet,
    DataType,
    Device,
    DeviceFaultError,
    Error,
    Event,
    ForkedError,
    HostMemoryError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidStateError,
    Layout,
    MemoryConfig,
    NotFoundError,
    OutOfDeviceMemoryError,
    ProgramNotCachedError,
    ProtocolError,
    ShardOrientation,
    ShardSpec,
    Tensor,
    TensorMemoryLayout,
    TraceRegionError,
    TransportError,
    UnsupportedError,
    WaitTimeoutError,
    __version__,
    add,
    allocate_tensor_on_device,
    begin_trace_capture,
    close_device,
    copy_host_to_device_tensor,
    create_event,
    deallocate,
    end_trace_capture,
    event_synchronize,
    execute_trace,
    exp,
    fill,
    gelu,
    matmul,
    mul,
    record_event,
    relu,
    release_trace,
    reshard,
    sub,
    synchronize_device,
    to_layout,
    to_memory_config,
    to_numpy,
    trace_bindings,
    trace_file_bindings,
    trace_file_scalars,
    trace_get_info,
    trace_load,
    trace_rebind,
    trace_save,
    trace_scalars,
    trace_set_scalar,
    typecast,
    wait_for_event,
)
from ._ttdrv import (  # noqa: F401  (re-exported; the transformer ops, device contract 1.3)
    attention_context,
    attention_scores,
    attention_softmax,
    embedding,
    layer_norm,
    linear,
    mean_pool,
    softmax,
)
from ._ttdrv import (  # noqa: F401  (re-exported; registered host memory, device contract 1.5)
    HostMemory,
    copy_device_tensor_to_registered,
    copy_registered_to_device_tensor,
    register_host_memory,
)
from .traced import TracedFunction, traced  # noqa: F401

_logging.getLogger("ttdrv").addHandler(_logging.NullHandler())

# ttnn's constants.
float32 = DataType.FLOAT32
bfloat16 = DataType.BFLOAT16
ROW_MAJOR_LAYOUT = Layout.ROW_MAJOR
TILE_LAYOUT = Layout.TILE
DRAM_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.DRAM)
L1_MEMORY_CONFIG = MemoryConfig(TensorMemoryLayout.INTERLEAVED, BufferType.L1)

# ttnn's other names for the element-wise ops.
subtract = sub
multiply = mul

HOST_PAGE_SIZE = 4096
"""Registered host memory starts on a multiple of this and is a multiple of it long (``register_host_memory``)."""


def aligned_empty(shape: int | tuple[int, ...], dtype: object = _np.float32) -> _np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a ``HOST_PAGE_SIZE`` boundary, for
    ``register_host_memory``: ``shape`` and ``dtype`` as ``numpy.empty``'s. Its size is rounded up to whole pages
    underneath (the array itself has exactly ``shape``; ``register_host_memory`` needs ``nbytes`` to be a multiple of
    the page, so choose a shape whose size is, or register a larger array and use a view of it for your data).
    """
    dt = _np.dtype(dtype)
    count = int(_np.prod(shape, dtype=_np.int64))
    nbytes = count * dt.itemsize
    raw = _np.empty(nbytes + HOST_PAGE_SIZE, dtype=_np.uint8)
    start = -raw.ctypes.data % HOST_PAGE_SIZE
    return raw[start : start + nbytes].view(dt).reshape(shape)


_open_devices: "_weakref.WeakValueDictionary[int, Device]" = _weakref.WeakValueDictionary()


def open_device(
    *,
    device_id: int = 0,
    l1_small_size: int = 0,
    trace_region_size: int = 0,
    num_command_queues: int = 1,
    dispatch_core_config: object = None,
    selector: str | None = None,
    timeout: float | None = None,
    hugepages: bool = True,
) -> Device:
    """Opens device ``device_id`` (``ttnn.open_device``); if it is already open, returns that device.

    Keyword Args:
        device_id: which device: 0 is what the driver's ``auto`` picks (``$TTDRV_DEVICE``, else the first ttdrv
            device bound to vfio-pci, else the emulated device); N is the N-th bound device ``ttdrv list`` shows
            (each id opens its own emulated device when the host has none).
        l1_small_size: bytes of L1 per core reserved for ``BufferType.L1_SMALL`` tensors (default 0).
        trace_region_size: bytes of device DRAM reserved for trace buffers. 0 (the default) takes trace buffers
            from ordinary DRAM as traces are captured, so no size needs tuning.
        num_command_queues: 1 (default) or 2 (up to what the device has).
        dispatch_core_config: accepted for ttnn's signature; ttdrv devices dispatch in hardware.
        selector: a device selector that overrides ``device_id``: ``"emu"``, ``"emu:OPTIONS"`` (e.g.
            ``"emu:jitter=7,jitter_us=100"`` or ``"emu:paced"``; ``ttdrv help devices`` lists the options) or
            ``"vfio:DDDD:BB:DD.F"``. ``$TTDRV_DEVICE`` sets it for device 0 without code changes.
        timeout: seconds a blocking wait may take before it raises ``WaitTimeoutError`` (default 30).
        hugepages: use 2 MiB hugepages for the command rings when the host has them (default True).
    """
    del dispatch_core_config
    existing = _open_devices.get(device_id)
    if existing is not None and existing.is_open():
        if selector is not None and selector != existing.selector:
            raise InvalidArgumentError(
                f"device {device_id} is already open as {existing.selector!r}; close_device it before opening it "
                f"as {selector!r}"
            )
        return existing
    device = _ttdrv._open_device(
        device_id=device_id,
        l1_small_size=l1_small_size,
        trace_region_size=trace_region_size,
        num_command_queues=num_command_queues,
        selector=selector,
        timeout=timeout,
        hugepages=hugepages,
    )
    _open_devices[device_id] = device
    return device


def from_numpy(
    array,
    dtype: DataType | None = None,
    *,
    layout: Layout = ROW_MAJOR_LAYOUT,
    device: Device | None = None,
    memory_config: MemoryConfig | None = None,
    cq_id: int = 0,
) -> Tensor:
    """A tensor from a numpy array (or anything ``numpy.asarray`` takes), like ``ttnn.from_torch``.

    The tensor has the array's shape (1 to 4 dimensions; a scalar becomes shape (1,)). ``dtype`` defaults to
    float32. A C-contiguous float32 array backs a float32 tensor in place, without a copy (the tensor sees later
    changes to the array, as ttnn's borrowed host storage does); so does a uint16 array of bfloat16 bits for a
    bfloat16 tensor. Other arrays are converted once (float32 data for a bfloat16 tensor is rounded to nearest
    even). With ``device``, the data is written to a new device tensor (``memory_config``, default DRAM
    interleaved) on queue ``cq_id``, straight from the array into the command ring.
    """
    a = _np.asarray(array)
    if a.ndim == 0:
        a = a.reshape(1)
    if dtype is None:
        dtype = float32
    if dtype == bfloat16 and a.dtype == _np.uint16:
        a = _np.ascontiguousarray(a)
    else:
        a = _np.ascontiguousarray(a, dtype=_np.float32)
    t = _ttdrv._host_tensor(a, a.shape, dtype, layout)
    if device is not None:
        return t.to(device, memory_config, cq_id)
    return t


def full(
    shape,
    fill_value: float,
    dtype: DataType = float32,
    layout: Layout = ROW_MAJOR_LAYOUT,
    device: Device | None = None,
    memory_config: MemoryConfig | None = None,
) -> Tensor:
    """A tensor of ``shape`` filled with ``fill_value`` (``ttnn.full``); computed on the device when ``device``
    is given, else a host tensor."""
    if device is not None:
        return _ttdrv._full_on_device(shape, fill_value, dtype, layout, device, memory_config)
    return from_numpy(_np.full(tuple(shape), fill_value, dtype=_np.float32), dtype, layout=layout)


def zeros(shape, dtype: DataType = float32, layout: Layout = ROW_MAJOR_LAYOUT, device=None, memory_config=None):
    """``full(shape, 0.0, ...)`` (``ttnn.zeros``)."""
    return full(shape, 0.0, dtype, layout, device, memory_config)


def ones(shape, dtype: DataType = float32, layout: Layout = ROW_MAJOR_LAYOUT, device=None, memory_config=None):
    """``full(shape, 1.0, ...)`` (``ttnn.ones``)."""
    return full(shape, 1.0, dtype, layout, device, memory_config)


@_dataclass(frozen=True)
class CoreGrid:
    """A grid of ``y`` rows by ``x`` columns of cores from (0, 0) (``ttnn.CoreGrid``)."""

    y: int
    x: int

    @property
    def num_cores(self) -> int:
        return self.x * self.y


class ShardStrategy(_enum.Enum):
    """How ``create_sharded_memory_config`` cuts a tensor (``ttnn.ShardStrategy``)."""

    HEIGHT = "height"
    WIDTH = "width"
    BLOCK = "block"


def create_sharded_memory_config(
    shape,
    core_grid: CoreGrid | CoreRangeSet,
    strategy: ShardStrategy,
    orientation: ShardOrientation | None = None,
    use_height_and_width_as_shard_shape: bool = False,
) -> MemoryConfig:
    """An L1 sharded memory config for tensors of ``shape`` (``ttnn.create_sharded_memory_config``).

    ``shape`` folds into rows x columns (every dimension but the last into rows). HEIGHT gives each core
    ``rows / cores`` whole rows, WIDTH ``columns / cores`` whole columns, BLOCK a ``rows / grid.y`` by
    ``columns / grid.x`` block. With ``use_height_and_width_as_shard_shape`` the last two dimensions of ``shape``
    are the shard shape itself. The shard shape must divide the tensor's (the device does not pad).
    """
    orientation = orientation or ShardOrientation.ROW_MAJOR
    if isinstance(core_grid, CoreGrid):
        grid = CoreRangeSet({CoreRange(CoreCoord(0, 0), CoreCoord(core_grid.x - 1, core_grid.y - 1))})
        gx, gy = core_grid.x, core_grid.y
    else:
        grid = core_grid
        (r,) = grid.ranges
        gx, gy = r.end.x - r.start.x + 1, r.end.y - r.start.y + 1
    dims = list(shape)
    cols = dims[-1]
    rows = 1
    for d in dims[:-1]:
        rows *= d
    cores = gx * gy
    layouts = {
        ShardStrategy.HEIGHT: TensorMemoryLayout.HEIGHT_SHARDED,
        ShardStrategy.WIDTH: TensorMemoryLayout.WIDTH_SHARDED,
        ShardStrategy.BLOCK: TensorMemoryLayout.BLOCK_SHARDED,
    }
    if use_height_and_width_as_shard_shape:
        shard = (dims[-2] if len(dims) > 1 else 1, cols)
    elif strategy == ShardStrategy.HEIGHT:
        shard = (-(-rows // cores), cols)
    elif strategy == ShardStrategy.WIDTH:
        shard = (rows, -(-cols // cores))
    else:
        if orientation == ShardOrientation.COL_MAJOR:
            gx, gy = gy, gx
        shard = (-(-rows // gy), -(-cols // gx))
    return MemoryConfig(layouts[strategy], BufferType.L1, ShardSpec(grid, shard, orientation))


__all__ = [n for n in dir() if not n.startswith("_")]
