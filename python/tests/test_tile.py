"""TILE_LAYOUT end to end: tiled tensors round-trip (aligned and unaligned shapes, every memory kind), the ops
compute on tiled operands (alone and mixed with row-major ones) as numpy does, to_layout converts both ways, and a
trace of tiled tensors replays. The device's in-tile order itself is checked byte for byte by the C tests
(c-tests), where the raw device bytes are visible; here only logical data is."""

from __future__ import annotations

import numpy as np
import pytest

import ttdrv as ttnn
from conftest import Mlp, check_outputs, make_inputs


@pytest.fixture
def device(open_device):
    return open_device(selector="emu", num_command_queues=2)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def bf16(x):
    """x rounded to bfloat16 (nearest even), as float32."""
    b = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return (b.astype(np.uint32) << 16).view(np.float32)


SHAPES = [(32, 32), (64, 96), (1, 1, 32, 64), (1, 1, 5, 7), (2, 3, 33, 65), (100,), (3, 1, 1), (1, 1, 31, 1000)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("mem", ["DRAM", "L1"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiled_tensors_round_trip(device, shape, mem, dtype):
    x = rand(*shape)
    dt = getattr(ttnn, dtype)
    want = x if dtype == "float32" else bf16(x)
    memory_config = getattr(ttnn, f"{mem}_MEMORY_CONFIG")
    t = ttnn.from_numpy(x, dt, layout=ttnn.TILE_LAYOUT, device=device, memory_config=memory_config)
    assert t.layout == ttnn.TILE_LAYOUT and t.shape == shape
    # ttnn's padded shape: the last two dimensions rounded up to whole tiles; the data stays logical.
    padded = tuple(shape[:-2]) + tuple(-(-d // 32) * 32 for d in shape[-2:])
    assert t.padded_shape == padded
    assert np.array_equal(t.cpu().to_numpy(), want)
    assert np.array_equal(t.cpu(blocking=False).to_numpy(), want)
    assert np.array_equal(t.to_numpy(), want)
    # Written in place into a tiled tensor allocated on the device.
    u = ttnn.allocate_tensor_on_device(shape, dt, ttnn.TILE_LAYOUT, device, memory_config)
    assert u.layout == ttnn.TILE_LAYOUT
    ttnn.copy_host_to_device_tensor(ttnn.from_numpy(x * 2, dt, layout=ttnn.TILE_LAYOUT), u)
    assert np.array_equal(u.cpu().to_numpy(), want * 2)
    ttnn.copy_host_to_device_tensor(x * 3, u)  # a numpy array straight in: tilized on the way
    assert np.array_equal(u.cpu(blocking=False).to_numpy(), bf16(x * 3) if dtype == "bfloat16" else x * 3)


def test_tiled_sharded_round_trip(device):
    x = rand(1, 1, 128, 64)
    grid = ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(3, 0))})
    height = ttnn.MemoryConfig(ttnn.TensorMemoryLayout.HEIGHT_SHARDED, ttnn.BufferType.L1, ttnn.ShardSpec(grid, (32, 64)))
    t = ttnn.from_numpy(x, layout=ttnn.TILE_LAYOUT, device=device, memory_config=height)
    assert t.is_sharded() and np.array_equal(t.to_numpy(), x)
    banks = ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(1, 0))})
    width = ttnn.MemoryConfig(ttnn.TensorMemoryLayout.WIDTH_SHARDED, ttnn.BufferType.DRAM, ttnn.ShardSpec(banks, (128, 32)))
    u = ttnn.to_memory_config(t, width)
    assert u.layout == ttnn.TILE_LAYOUT and np.array_equal(u.to_numpy(), x)
    # Shards of a tiled tensor are whole tiles: the driver says so.
    bad = ttnn.MemoryConfig(ttnn.TensorMemoryLayout.HEIGHT_SHARDED, ttnn.BufferType.L1, ttnn.ShardSpec(grid, (8, 64)))
    with pytest.raises(ttnn.InvalidArgumentError, match="32|tile"):
        ttnn.from_numpy(rand(1, 1, 32, 64), layout=ttnn.TILE_LAYOUT, device=device, memory_config=bad)


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("b_layout", ["TILE", "ROW_MAJOR"])
@pytest.mark.parametrize("m,k,n", [(32, 64, 96), (20, 40, 50), (1, 33, 7)])
def test_ops_on_tiled_operands_match_numpy(device, m, k, n, b_layout):
    tile, bl = ttnn.TILE_LAYOUT, getattr(ttnn, f"{b_layout}_LAYOUT")
    xa, xb, xw, bias = rand(2, 1, m, k, seed=1), rand(2, 1, m, k, seed=2), rand(k, n, seed=3), rand(1, n, seed=4)
    a = ttnn.from_numpy(xa, layout=tile, device=device)
    b = ttnn.from_numpy(xb, layout=bl, device=device, memory_config=ttnn.L1_MEMORY_CONFIG)
    w = ttnn.from_numpy(xw, layout=bl, device=device)
    c = ttnn.from_numpy(bias, layout=bl, device=device)
    tol = dict(rtol=1e-5, atol=1e-5)
    y = ttnn.matmul(a, w)
    assert y.layout == tile and y.shape == (2, 1, m, n)  # an op's output has its first input's layout
    np.testing.assert_allclose(y.to_numpy(), xa @ xw, **tol)
    np.testing.assert_allclose(ttnn.add(y, c).to_numpy(), xa @ xw + bias, **tol)  # one row, broadcast
    np.testing.assert_allclose((a + b).to_numpy(), xa + xb, **tol)
    np.testing.assert_allclose((a - b).to_numpy(), xa - xb, **tol)
    np.testing.assert_allclose((a * b).to_numpy(), xa * xb, **tol)
    np.testing.assert_allclose(ttnn.mul(a, 0.5).to_numpy(), xa * 0.5, **tol)
    np.testing.assert_allclose(ttnn.relu(a).to_numpy(), np.maximum(xa, 0), **tol)
    np.testing.assert_allclose(ttnn.exp(a, memory_config=ttnn.L1_MEMORY_CONFIG).to_numpy(), np.exp(xa), rtol=1e-5)
    np.testing.assert_allclose(ttnn.gelu(a).to_numpy(), _gelu(xa), rtol=1e-4, atol=1e-5)
    # The row-major operand first: the output is row-major, the tiled operand read as it is.
    r = ttnn.add(b, a)
    assert r.layout == bl
    np.testing.assert_allclose(r.to_numpy(), xa + xb, **tol)
    # Into a tiled output tensor of the other layout's input.
    out = ttnn.allocate_tensor_on_device((2, 1, m, k), ttnn.float32, tile, device)
    assert ttnn.sub(b, a, output_tensor=out) is out
    np.testing.assert_allclose(out.to_numpy(), xb - xa, **tol)
    f = ttnn.fill(out, 2.5)
    assert f.layout == tile and np.array_equal(f.to_numpy(), np.full((2, 1, m, k), 2.5, np.float32))
    assert ttnn.fill(a, -1.0, output_tensor=out) is out
    assert np.array_equal(out.to_numpy(), np.full((2, 1, m, k), -1.0, np.float32))
    h = ttnn.typecast(a, ttnn.bfloat16)
    assert h.layout == tile and np.array_equal(h.to_numpy(), bf16(xa))
    z = ttnn.full((3, m, n), 1.5, layout=tile, device=device)
    assert z.layout == tile and np.array_equal(z.to_numpy(), np.full((3, m, n), 1.5, np.float32))


def test_to_layout_converts_on_the_device_and_on_the_host(device):
    x = rand(1, 1, 45, 70)
    rm = ttnn.from_numpy(x, device=device)
    assert rm.layout == ttnn.ROW_MAJOR_LAYOUT
    t = ttnn.to_layout(rm, ttnn.TILE_LAYOUT)
    assert t.layout == ttnn.TILE_LAYOUT and t.shape == x.shape and t.padded_shape == (1, 1, 64, 96)
    assert t.memory_config() == rm.memory_config() and np.array_equal(t.to_numpy(), x)
    back = ttnn.to_layout(t, ttnn.ROW_MAJOR_LAYOUT, memory_config=ttnn.L1_MEMORY_CONFIG)
    assert back.layout == ttnn.ROW_MAJOR_LAYOUT and back.memory_config() == ttnn.L1_MEMORY_CONFIG
    assert np.array_equal(back.to_numpy(), x)
    h = ttnn.to_layout(rm, layout=ttnn.TILE_LAYOUT, dtype=ttnn.bfloat16)
    assert h.dtype == ttnn.bfloat16 and np.array_equal(h.to_numpy(), bf16(x))
    # A host tensor keeps its dense data: the new tensor shares it (or converts it for another dtype).
    host = ttnn.from_numpy(x)
    ht = ttnn.to_layout(host, ttnn.TILE_LAYOUT)
    assert ht.layout == ttnn.TILE_LAYOUT and ht.storage_type() == "HOST"
    assert np.shares_memory(np.asarray(ht), x) and np.array_equal(ht.to_numpy(), x)
    assert np.array_equal(ttnn.to_layout(host, ttnn.TILE_LAYOUT, dtype=ttnn.bfloat16).to_numpy(), bf16(x))
    assert ht.to(device).layout == ttnn.TILE_LAYOUT
    with pytest.raises(ttnn.InvalidArgumentError, match="pad_value"):
        ttnn.to_layout(rm, ttnn.TILE_LAYOUT, pad_value=1.0)
    with pytest.raises(ttnn.InvalidArgumentError, match="host"):
        ttnn.to_layout(host, ttnn.TILE_LAYOUT, memory_config=ttnn.L1_MEMORY_CONFIG)


def test_traced_run_with_tile_tensors(open_device):
    """Section 1.3.1's pattern with everything tiled: a persistent tiled DRAM input, a tiled MLP, replays of
    distinct inputs checked against numpy."""
    d = open_device(selector="emu:jitter=3,jitter_us=50", trace_region_size=1 << 20)
    model = Mlp(ttnn, d, layout=ttnn.TILE_LAYOUT)
    inputs = make_inputs(30)
    inp = ttnn.allocate_tensor_on_device(inputs[0].shape, ttnn.float32, ttnn.TILE_LAYOUT, d, ttnn.DRAM_MEMORY_CONFIG)
    ttnn.copy_host_to_device_tensor(ttnn.from_numpy(inputs[0], layout=ttnn.TILE_LAYOUT), inp)
    model(ttnn.to_memory_config(inp, ttnn.L1_MEMORY_CONFIG))  # compile run
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    out = model(ttnn.to_memory_config(inp, ttnn.L1_MEMORY_CONFIG))
    ttnn.end_trace_capture(d, tid, cq_id=0)
    assert out.layout == ttnn.TILE_LAYOUT
    outputs = []
    for x in inputs:
        ttnn.copy_host_to_device_tensor(ttnn.from_numpy(x, layout=ttnn.TILE_LAYOUT), inp)
        ttnn.execute_trace(d, tid, cq_id=0, blocking=False)
        outputs.append(out.cpu(blocking=False))
    check_outputs(model, inputs, outputs)
    ttnn.release_trace(d, tid)


def test_traced_helper_with_tile_tensors(open_device):
    d = open_device(selector="emu")
    model = Mlp(ttnn, d, layout=ttnn.TILE_LAYOUT)

    @ttnn.traced(d)
    def run(x):
        return model(ttnn.to_memory_config(x, ttnn.L1_MEMORY_CONFIG))

    inputs = make_inputs(5)
    outputs = []
    for x in inputs:
        outputs.append(run(ttnn.from_numpy(x, layout=ttnn.TILE_LAYOUT)).cpu(blocking=False))
        outputs[-1].to_numpy()  # read before the next call overwrites the output
    check_outputs(model, inputs, outputs)
    # The captured spec includes the layout.
    with pytest.raises(ttnn.InvalidArgumentError, match="Layout.ROW_MAJOR"):
        run(ttnn.from_numpy(inputs[0]))
    run.release()


def test_the_drivers_mlp_takes_a_tiled_input(device):
    rng = np.random.default_rng(3)
    ws = [rng.uniform(-0.3, 0.3, (64, 32)).astype(np.float32), rng.uniform(-0.3, 0.3, (32, 16)).astype(np.float32)]
    bs = [rng.uniform(-0.1, 0.1, 32).astype(np.float32), rng.uniform(-0.1, 0.1, 16).astype(np.float32)]
    mlp = ttnn.MLP(device, ws, bs, batch=40)
    x = rand(40, 64)
    y = mlp(ttnn.from_numpy(x, layout=ttnn.TILE_LAYOUT, device=device))
    want = np.maximum(x @ ws[0] + bs[0], 0) @ ws[1] + bs[1]
    np.testing.assert_allclose(y.to_numpy(), want, rtol=1e-5, atol=1e-5)
