"""The package's API beyond the guide's examples: ttnn's signatures, shapes, dtypes, memory configs, ops against
numpy, zero copy, non-blocking reads, errors, the GIL, logging and object lifetimes."""

from __future__ import annotations

import gc
import inspect
import logging
import pathlib
import random
import re
import threading
import time

import numpy as np
import pytest

import ttdrv
import ttdrv as ttnn


@pytest.fixture
def device(open_device):
    return open_device(selector="emu", num_command_queues=2)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ---- ttnn's signatures ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn,sig",
    [
        (ttnn.open_device, "(*, device_id: 'int' = 0, l1_small_size: 'int' = 0, trace_region_size: 'int' = 0, "
         "num_command_queues: 'int' = 1, dispatch_core_config: 'object' = None, selector: 'str | None' = None, "
         "timeout: 'float | None' = None, hugepages: 'bool' = True) -> 'Device'"),
        (ttnn.close_device, "(device)"),
        (ttnn.allocate_tensor_on_device, "(shape, dtype, layout, device, memory_config=None)"),
        (ttnn.copy_host_to_device_tensor, "(host_tensor, device_tensor, cq_id=0)"),
        (ttnn.begin_trace_capture, "(device, *, cq_id=0)"),
        (ttnn.end_trace_capture, "(device, trace_id, *, cq_id=0)"),
        # ttnn's arguments, then ttdrv's keyword-only per-replay bindings (a patched trace: test_trace_patch.py).
        (ttnn.execute_trace, "(device, trace_id, *, cq_id=0, blocking=True, bindings=None, after=None)"),
        (ttnn.release_trace, "(device, trace_id)"),
        (ttnn.create_event, "(device)"),
        (ttnn.wait_for_event, "(cq_id, event)"),
        (ttnn.event_synchronize, "(event)"),
        (ttnn.synchronize_device, "(device, cq_id=None, sub_device_ids=None)"),
        (ttnn.to_memory_config, "(tensor, memory_config, dtype=None, output_tensor=None, *, queue_id=0)"),
        (ttnn.reshard, "(input_tensor, output_memory_config, output_tensor=None, *, queue_id=0)"),
        (ttnn.deallocate, "(tensor, force=True)"),
        (ttnn.Tensor.cpu, "(self, /, blocking=True, cq_id=0)"),
        (ttnn.Tensor.deallocate, "(self, /, force=False)"),
        (ttnn.Tensor.to, "(self, /, device, mem_config=None, cq_id=0, *, memory_config=None)"),
        (ttnn.matmul, "(input_tensor_a, input_tensor_b, *, memory_config=None, output_tensor=None, queue_id=0)"),
        (ttnn.add, "(input_tensor_a, input_tensor_b, *, memory_config=None, output_tensor=None, queue_id=0)"),
        (ttnn.relu, "(input_tensor, *, memory_config=None, output_tensor=None, queue_id=0)"),
    ],
)
def test_signatures_are_ttnns(fn, sig):
    assert str(inspect.signature(fn)) == sig


def test_help_explains_each_call():
    for name in ["execute_trace", "record_event", "copy_host_to_device_tensor", "reshard", "open_device", "Tensor"]:
        doc = getattr(ttnn, name).__doc__
        assert doc and len(doc) > 80, name


# ---- devices ------------------------------------------------------------------------------------------------------


def test_open_device_returns_the_open_device_for_the_same_id():
    d = ttnn.open_device(device_id=7, selector="emu")
    try:
        assert ttnn.open_device(device_id=7) is d
        with pytest.raises(ttnn.InvalidArgumentError, match="already open"):
            ttnn.open_device(device_id=7, selector="emu:queues=4")
    finally:
        ttnn.close_device(d)
    assert not d.is_open()
    d2 = ttnn.open_device(device_id=7, selector="emu")
    assert d2 is not d
    ttnn.close_device(d2)


def test_device_as_context_manager_and_queries():
    with ttnn.open_device(device_id=8, selector="emu:grid=4x2,banks=4", num_command_queues=2) as d:
        g = d.compute_with_storage_grid_size()
        assert (g.x, g.y) == (4, 2)
        assert d.dram_grid_size().x == 4
        assert d.num_command_queues == 2
        assert d.info()["dram_banks"] == 4
    assert not d.is_open()


def test_bad_parameters_raise_the_drivers_message():
    with pytest.raises(ttnn.InvalidArgumentError, match="num_command_queues"):
        ttnn.open_device(device_id=9, selector="emu:queues=1", num_command_queues=2)
    with pytest.raises(ttnn.InvalidArgumentError, match="unknown emu option"):
        ttnn.open_device(device_id=9, selector="emu:bogus")


# ---- shapes, dtypes, layouts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64,), (4, 16), (2, 2, 16), (1, 2, 4, 8)])
def test_shapes_fold_every_dimension_but_the_last_into_rows(device, shape):
    x = rand(*shape)
    t = ttnn.from_numpy(x, device=device, memory_config=ttnn.L1_MEMORY_CONFIG)
    assert t.shape == shape
    back = t.cpu().to_numpy()
    assert back.shape == shape and np.array_equal(back, x)


def test_bad_shapes(device):
    with pytest.raises(ttnn.InvalidArgumentError, match="1 to 4"):
        ttnn.allocate_tensor_on_device((1, 1, 1, 2, 3), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device)
    with pytest.raises(ttnn.InvalidArgumentError, match="zero dimension"):
        ttnn.allocate_tensor_on_device((0, 3), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device)


def test_bfloat16_from_float32_rounds_and_from_uint16_bits_is_used_in_place(device):
    x = np.array([[1.0, 1.0 + 1 / 256, 1.0 + 3 / 256, -2.5]], np.float32)
    t = ttnn.from_numpy(x, ttnn.bfloat16)
    assert np.array_equal(t.to_numpy(), np.array([[1.0, 1.0, 1.0 + 4 / 256, -2.5]], np.float32))
    bits = np.asarray(t)  # the buffer protocol exposes bfloat16 tensors as their uint16 bits
    assert bits.dtype == np.uint16 and bits[0, 0] == 0x3F80
    raw = np.array([[0x3F80, 0x4000]], np.uint16)
    u = ttnn.from_numpy(raw, ttnn.bfloat16)
    raw[0, 1] = 0x4040  # used in place: the tensor sees the change
    d = u.to(device)
    assert np.array_equal(d.cpu().to_numpy(), np.array([[1.0, 3.0]], np.float32))


def test_typecast_converts_on_the_device(device):
    x = rand(8, 16)
    t = ttnn.from_numpy(x, device=device)
    b = ttnn.typecast(t, ttnn.bfloat16)
    assert b.dtype == ttnn.bfloat16
    back = ttnn.typecast(b, ttnn.float32).to_numpy()
    want = ttnn.from_numpy(x, ttnn.bfloat16).to_numpy()
    assert np.array_equal(back, want)


# ---- memory configs -----------------------------------------------------------------------------------------------


def sharded_configs():
    l1 = lambda x1, y1: ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(x1, y1))})
    M, B, L = ttnn.TensorMemoryLayout, ttnn.BufferType, ttnn.ShardOrientation
    return [
        ttnn.DRAM_MEMORY_CONFIG,
        ttnn.L1_MEMORY_CONFIG,
        ttnn.MemoryConfig(M.HEIGHT_SHARDED, B.L1, ttnn.ShardSpec(l1(3, 1), (8, 64))),
        ttnn.MemoryConfig(M.WIDTH_SHARDED, B.L1, ttnn.ShardSpec(l1(3, 0), (64, 16))),
        ttnn.MemoryConfig(M.BLOCK_SHARDED, B.L1, ttnn.ShardSpec(l1(1, 1), (32, 32), L.COL_MAJOR)),
        ttnn.MemoryConfig(M.HEIGHT_SHARDED, B.DRAM, ttnn.ShardSpec(l1(7, 0), (8, 64))),
        ttnn.MemoryConfig(M.BLOCK_SHARDED, B.DRAM, ttnn.ShardSpec(l1(3, 0), (32, 32))),
        ttnn.create_sharded_memory_config((1, 64, 64), ttnn.CoreGrid(y=2, x=4), ttnn.ShardStrategy.HEIGHT),
        ttnn.create_sharded_memory_config((64, 64), ttnn.CoreGrid(y=2, x=2), ttnn.ShardStrategy.BLOCK),
    ]


@pytest.mark.parametrize("src", range(len(sharded_configs())))
def test_to_memory_config_between_every_pair_of_layouts(device, src):
    configs = sharded_configs()
    x = rand(64, 64, seed=src)
    t = ttnn.from_numpy(x, device=device, memory_config=configs[src])
    assert t.memory_config() == configs[src]
    for dst in configs:
        u = ttnn.to_memory_config(t, dst)
        assert u.memory_config() == dst and u.is_sharded() == dst.is_sharded()
        assert np.array_equal(u.to_numpy(), x)


def test_reshard_into_an_output_tensor_keeps_its_address(device):
    cfg = sharded_configs()[2]
    src = ttnn.from_numpy(rand(64, 64), device=device)
    out = ttnn.allocate_tensor_on_device((64, 64), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, cfg)
    addr = out.buffer_address()
    got = ttnn.reshard(src, cfg, out)
    assert got is out and out.buffer_address() == addr
    assert np.array_equal(out.to_numpy(), src.to_numpy())
    with pytest.raises(ttnn.InvalidArgumentError, match="not as the memory config given"):
        ttnn.reshard(src, ttnn.L1_MEMORY_CONFIG, out)


def test_bad_memory_configs_say_what_to_do(device):
    M, B = ttnn.TensorMemoryLayout, ttnn.BufferType
    two = ttnn.CoreRangeSet(
        [ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(1, 0)), ttnn.CoreRange(ttnn.CoreCoord(0, 1), ttnn.CoreCoord(1, 1))]
    )
    with pytest.raises(ttnn.InvalidArgumentError, match="exactly one CoreRange"):
        ttnn.MemoryConfig(M.HEIGHT_SHARDED, B.L1, ttnn.ShardSpec(two, (8, 8)))
    with pytest.raises(ttnn.InvalidArgumentError, match="needs a shard spec"):
        ttnn.MemoryConfig(M.HEIGHT_SHARDED, B.L1)
    far = ttnn.CoreRangeSet({ttnn.CoreRange(ttnn.CoreCoord(0, 0), ttnn.CoreCoord(9, 0))})
    cfg = ttnn.MemoryConfig(M.HEIGHT_SHARDED, B.L1, ttnn.ShardSpec(far, (8, 64)))
    with pytest.raises(ttnn.InvalidArgumentError, match="outside device"):
        ttnn.allocate_tensor_on_device((80, 64), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, cfg)


# ---- ops ----------------------------------------------------------------------------------------------------------


def test_ops_match_numpy(device):
    a_h, b_h, w_h, row_h = rand(2, 16, 32, seed=1), rand(2, 16, 32, seed=2), rand(32, 8, seed=3), rand(1, 32, seed=4)
    a, b, w, row = (ttnn.from_numpy(v, device=device, memory_config=ttnn.L1_MEMORY_CONFIG) for v in (a_h, b_h, w_h, row_h))
    close = lambda t, want, tol=1e-5: np.testing.assert_allclose(t.to_numpy(), want, rtol=tol, atol=tol)
    close(ttnn.matmul(a, w), a_h @ w_h)
    close(a @ w, a_h @ w_h)
    close(ttnn.add(a, b), a_h + b_h)
    close(a + row, a_h + row_h)
    close(ttnn.sub(a, b), a_h - b_h)
    close(ttnn.subtract(a, row), a_h - row_h)
    close(ttnn.mul(a, b), a_h * b_h)
    close(a * 3.0, a_h * 3.0)
    close(ttnn.multiply(a, -0.5), a_h * -0.5)
    close(ttnn.relu(a), np.maximum(a_h, 0))
    close(ttnn.exp(a), np.exp(a_h), 1e-5)
    gelu = 0.5 * a_h * (1 + np.tanh(np.sqrt(2 / np.pi) * (a_h + 0.044715 * a_h**3)))
    close(ttnn.gelu(a), gelu, 1e-5)
    close(ttnn.fill(a, 2.5), np.full(a_h.shape, 2.5, np.float32))
    close(ttnn.full((3, 5), -1.0, device=device), np.full((3, 5), -1.0, np.float32))
    close(ttnn.zeros((4,), device=device), np.zeros(4, np.float32))
    out = ttnn.allocate_tensor_on_device(a.shape, ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, ttnn.DRAM_MEMORY_CONFIG)
    assert ttnn.relu(a, output_tensor=out) is out
    close(out, np.maximum(a_h, 0))
    assert ttnn.add(a, b, memory_config=ttnn.DRAM_MEMORY_CONFIG).memory_config() == ttnn.DRAM_MEMORY_CONFIG
    # Defaults: a's memory config for a's shape, interleaved in a's memory otherwise.
    assert ttnn.relu(a).memory_config() == ttnn.L1_MEMORY_CONFIG


def test_op_errors_are_the_drivers(device):
    a = ttnn.from_numpy(rand(4, 8), device=device)
    b = ttnn.from_numpy(rand(8, 4), device=device)
    with pytest.raises(ttnn.InvalidArgumentError, match="broadcast"):
        ttnn.add(a, b)
    with pytest.raises(ttnn.InvalidArgumentError, match="matmul"):
        ttnn.matmul(a, a)
    h = ttnn.from_numpy(rand(4, 8))
    with pytest.raises(ttnn.InvalidArgumentError, match="host tensor"):
        ttnn.relu(h)
    with pytest.raises(ttnn.InvalidArgumentError, match="cq_id=5"):
        ttnn.relu(a, queue_id=5)
    bf = ttnn.typecast(a, ttnn.bfloat16)
    with pytest.raises(ttnn.InvalidArgumentError, match="element types differ"):
        ttnn.add(a, bf)


def test_mlp_model_matches_numpy_and_consumes_its_input(device):
    rng = np.random.default_rng(3)
    ws = [rng.uniform(-0.3, 0.3, (64, 32)).astype(np.float32), rng.uniform(-0.3, 0.3, (32, 16)).astype(np.float32)]
    bs = [rng.uniform(-0.1, 0.1, 32).astype(np.float32), rng.uniform(-0.1, 0.1, 16).astype(np.float32)]
    mlp = ttnn.MLP(device, ws, bs, batch=8)
    assert mlp.dims == [64, 32, 16] and mlp.ops_per_run == 5
    x = rand(8, 64)
    t = ttnn.from_numpy(x, device=device)
    y = mlp(t)
    assert not t.is_allocated()
    want = np.maximum(x @ ws[0] + bs[0], 0) @ ws[1] + bs[1]
    np.testing.assert_allclose(y.to_numpy(), want, rtol=1e-5, atol=1e-5)
    wrong = ttnn.from_numpy(rand(8, 32), device=device)
    with pytest.raises(ttnn.InvalidArgumentError, match="MLP input"):
        mlp(wrong)
    assert wrong.is_allocated()  # a refused input stays the caller's


# ---- transfers and zero copy --------------------------------------------------------------------------------------


def test_from_numpy_uses_the_array_in_place_and_cpu_lands_in_numpy_without_a_copy(device):
    x = rand(16, 32)
    h = ttnn.from_numpy(x)
    assert h.to_numpy() is x  # a C-contiguous float32 array backs the host tensor
    x[0, 0] = 42.0
    d = h.to(device)
    back = d.cpu()
    v1, v2 = back.to_numpy(), np.asarray(back)
    assert np.shares_memory(v1, v2)  # both are views of the host tensor's memory
    assert v1[0, 0] == 42.0 and np.array_equal(v1, x)
    # Not C-contiguous or not float32: converted once by from_numpy.
    assert np.array_equal(ttnn.from_numpy(x.T).to_numpy(), x.T)
    assert np.array_equal(ttnn.from_numpy(x.astype(np.float64)).to_numpy(), x)


def test_copy_host_to_device_tensor_from_a_tensor_or_an_array(device):
    t = ttnn.allocate_tensor_on_device((1, 1, 8, 16), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device)
    x = rand(1, 1, 8, 16)
    ttnn.copy_host_to_device_tensor(ttnn.from_numpy(x), t, cq_id=1)
    ttnn.synchronize_device(device)
    assert np.array_equal(t.cpu().to_numpy(), x)
    ttnn.copy_host_to_device_tensor(x * 2, t)
    assert np.array_equal(t.cpu().to_numpy(), x * 2)
    with pytest.raises(ttnn.InvalidArgumentError, match="same shape and dtype"):
        ttnn.copy_host_to_device_tensor(ttnn.from_numpy(rand(8, 8)), t)


def test_non_blocking_cpu_owns_its_memory_until_the_data_arrives(open_device):
    # A slow device: reads take long enough to still be in flight when the host looks.
    d = open_device(selector="emu:paced,pcie_gbps=0.05", num_command_queues=1)
    x = rand(256, 256)
    t = ttnn.from_numpy(x, device=d)
    pending = t.cpu(blocking=False)
    assert pending.storage_type() == "HOST"
    assert not pending.is_ready()
    assert np.array_equal(pending.to_numpy(), x)  # waits for the data
    assert pending.is_ready()
    # Dropped before its data arrives: the read is cancelled, then its memory freed.
    for _ in range(3):
        t.cpu(blocking=False)
    gc.collect()
    ttnn.synchronize_device(d)
    assert np.array_equal(t.cpu(blocking=False).to_numpy(), x)


def test_threads_waiting_for_one_non_blocking_read_all_get_its_data(open_device):
    d = open_device(selector="emu:paced,pcie_gbps=0.05", num_command_queues=1)
    x = rand(256, 256)
    pending = ttnn.from_numpy(x, device=d).cpu(blocking=False)
    got = []

    def read():
        got.append(pending.to_numpy())

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    assert pending.is_ready() in (True, False)  # asked while threads wait for the data: answers, does not raise
    for th in threads:
        th.join()
    assert len(got) == 4 and all(np.array_equal(g, x) for g in got)
    assert all(np.shares_memory(g, got[0]) for g in got)  # one read, one memory


def test_a_failed_non_blocking_read_never_writes_numpy_memory(open_device):
    # Every record takes 100 ms more on this device, and a wait gives up after 30 ms: reads time out.
    d = open_device(selector="emu:slow_us=100000", num_command_queues=1, timeout=0.03)
    x = rand(64, 64)  # 16 KiB: host memory from the heap, which freed blocks go back to at once
    t = ttnn.from_numpy(x, device=d)
    pending = t.cpu(blocking=False)
    with pytest.raises(ttnn.WaitTimeoutError):
        pending.to_numpy()
    # The timed-out read was cancelled and its memory freed; the tensor reports the failure from then on.
    with pytest.raises(ttnn.WaitTimeoutError, match="non-blocking read failed"):
        pending.to_numpy()
    with pytest.raises(ttnn.WaitTimeoutError):
        pending.is_ready()
    del pending
    dropped = t.cpu(blocking=False)  # dropped with its read in flight: cancelled too
    del dropped
    gc.collect()
    # numpy arrays of the same size now take the freed memory; the cancelled reads' data, arriving later, must land
    # in none of them.
    arrays = [np.full((64, 64), 7.0, np.float32) for _ in range(16)]
    later = t.cpu(blocking=False)
    deadline = time.monotonic() + 20
    while not later.is_ready():
        assert time.monotonic() < deadline, "the device stopped delivering reads after the cancelled ones"
        time.sleep(0.02)
    # The device kept going: the next read arrived whole, after both cancelled ones (queues run in order).
    assert np.array_equal(later.to_numpy(), x)
    for a in arrays:
        assert np.all(a == 7.0), "a cancelled read wrote into memory numpy owns"


def test_deallocate(device):
    t = ttnn.from_numpy(rand(4, 4), device=device)
    t.deallocate()
    assert not t.is_allocated() and t.storage_type() == "DEALLOCATED"
    with pytest.raises(ttnn.InvalidStateError, match="deallocated"):
        t.buffer_address()
    with pytest.raises(ttnn.InvalidStateError, match="deallocated"):
        ttnn.relu(t)
    u = ttnn.from_numpy(rand(4, 4), device=device, memory_config=ttnn.L1_MEMORY_CONFIG)
    addr = u.buffer_address()
    ttnn.deallocate(u)
    v = ttnn.allocate_tensor_on_device((4, 4), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, ttnn.L1_MEMORY_CONFIG)
    assert v.buffer_address() == addr  # freed at once, first fit reuses it


# ---- events and traces --------------------------------------------------------------------------------------------


def test_record_event_in_both_of_ttnns_forms(device):
    ev = ttnn.create_event(device)
    with pytest.raises(ttnn.InvalidStateError, match="never recorded"):
        ttnn.wait_for_event(0, ev)
    assert ttnn.record_event(0, ev) is None
    assert ttnn.record_event(cq_id=1, event=ev) is None
    ttnn.wait_for_event(0, ev)
    ttnn.event_synchronize(ev)
    assert ev.query()
    new = ttnn.record_event(device, 1)
    assert isinstance(new, ttnn.Event) and new is not ev
    ttnn.event_synchronize(new)
    assert isinstance(ttnn.record_event(device), ttnn.Event)
    with pytest.raises(ttnn.InvalidArgumentError, match="sub-devices"):
        ttnn.record_event(0, ev, [1])
    with pytest.raises(ttnn.InvalidArgumentError, match="cq_id=2"):
        ttnn.record_event(2, ev)


def test_trace_errors_are_typed(open_device):
    d = open_device(selector="emu", trace_region_size=1 << 20)
    a = ttnn.from_numpy(rand(8, 8), device=d)
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    with pytest.raises(ttnn.ProgramNotCachedError, match="compile"):
        ttnn.relu(a)
    with pytest.raises(ttnn.InvalidStateError, match="during trace capture"):
        ttnn.copy_host_to_device_tensor(rand(8, 8), a)
    ttnn.end_trace_capture(d, tid, cq_id=0)
    ttnn.release_trace(d, tid)
    with pytest.raises(ttnn.InvalidStateError, match="no trace|not found|released"):
        ttnn.execute_trace(d, tid)


def test_trace_replays_what_it_captured(open_device):
    d = open_device(selector="emu")
    x = rand(16, 16)
    inp = ttnn.from_numpy(x, device=d, memory_config=ttnn.L1_MEMORY_CONFIG)
    ttnn.relu(ttnn.mul(inp, 2.0))  # compile run
    tid = ttnn.begin_trace_capture(d)
    out = ttnn.relu(ttnn.mul(inp, 2.0))
    ttnn.end_trace_capture(d, tid)
    for k in range(5):
        ttnn.copy_host_to_device_tensor(x + k, inp)
        ttnn.execute_trace(d, tid, blocking=True)
        assert np.allclose(out.to_numpy(), np.maximum((x + k) * 2, 0))
    ttnn.release_trace(d, tid)


# ---- being a good Python citizen ----------------------------------------------------------------------------------


def test_blocking_waits_release_the_gil(open_device):
    d = open_device(selector="emu:paced,pcie_gbps=0.02", num_command_queues=1)
    t = ttnn.from_numpy(rand(512, 512), device=d)
    ticks = 0
    stop = threading.Event()

    def count():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    th = threading.Thread(target=count)
    th.start()
    try:
        time.sleep(0.01)
        before = ticks
        t0 = time.perf_counter()
        t.cpu(blocking=True)  # ~50 ms of emulated PCIe time
        waited = time.perf_counter() - t0
        during = ticks - before
    finally:
        stop.set()
        th.join()
    assert waited > 0.02
    assert during > 100, f"the other thread ran only {during} times in {waited * 1e3:.0f} ms of waiting"


def test_driver_logs_reach_python_logging(open_device, caplog):
    d = open_device(selector="emu:paced,core_gflops=0.001", num_command_queues=1, timeout=0.05)
    a = ttnn.from_numpy(rand(256, 256), device=d)
    ttnn.matmul(a, a)  # seconds of emulated compute
    with caplog.at_level(logging.WARNING, logger="ttdrv"):
        ttnn.close_device(d)
    hits = [r for r in caplog.records if "in flight" in r.getMessage()]
    assert hits and hits[0].name.startswith("ttdrv.") and hits[0].levelno == logging.WARNING


def test_objects_outlive_their_device_safely():
    d = ttnn.open_device(device_id=11, selector="emu", num_command_queues=2)
    t = ttnn.from_numpy(rand(8, 8), device=d)
    ev = ttnn.record_event(d, 0)
    ttnn.close_device(d)
    for call in (lambda: t.cpu(), lambda: ttnn.relu(t), lambda: ttnn.event_synchronize(ev), lambda: ttnn.execute_trace(d, 1)):
        with pytest.raises(ttnn.ClosedError, match="closed"):
            call()
    t.deallocate()


@pytest.mark.parametrize("seed", range(5))
def test_any_collection_order_is_safe(seed):
    d = ttnn.open_device(device_id=12, selector="emu:paced,pcie_gbps=0.5", num_command_queues=2)
    x = rand(64, 64)
    objs = {"device": d}
    objs["t"] = ttnn.from_numpy(x, device=d, memory_config=ttnn.L1_MEMORY_CONFIG)
    objs["r"] = ttnn.relu(objs["t"])
    objs["pending"] = objs["r"].cpu(blocking=False, cq_id=0)
    objs["ev"] = ttnn.record_event(d, 1)
    objs["host"] = ttnn.from_numpy(x)
    objs["view"] = np.asarray(objs["t"].cpu())
    ttnn.relu(objs["t"])
    tid = ttnn.begin_trace_capture(d)
    objs["traced"] = ttnn.relu(objs["t"])
    ttnn.end_trace_capture(d, tid)
    ttnn.execute_trace(d, tid, blocking=False)
    names = list(objs)
    random.Random(seed).shuffle(names)
    if seed % 2:
        ttnn.close_device(d)
    for n in names:
        del objs[n]
        gc.collect()
    del d
    gc.collect()


def test_errors_are_a_hierarchy_with_the_drivers_kinds():
    assert issubclass(ttnn.InvalidArgumentError, ttnn.Error) and issubclass(ttnn.InvalidArgumentError, ValueError)
    assert issubclass(ttnn.WaitTimeoutError, TimeoutError)
    assert issubclass(ttnn.OutOfDeviceMemoryError, MemoryError)
    assert ttnn.ClosedError.kind == "Closed" and ttnn.Error.kind is None
    assert ttnn.ContentsUndefinedError.kind == "ContentsUndefined"
    # One class per status of the C ABI (include/ttdrv.h) but the C-only ones (argument checks and the panic
    # boundary, which Python's signatures and the Rust API have no use for), named after it.
    header = (pathlib.Path(__file__).parents[2] / "include" / "ttdrv.h").read_text()
    statuses = set(re.findall(r"^\s*TTDRV_STATUS_([A-Z_]+) = \d+,", header, re.M))
    c_only = {"OK", "NULL_PARAMETER", "BUFFER_TOO_SMALL", "PANIC"}
    assert c_only <= statuses
    want = {"".join(w.capitalize() for w in st.split("_")) for st in statuses - c_only}
    kinds = {c.kind for c in ttnn.Error.__subclasses__()}
    assert kinds == want
    for c in ttnn.Error.__subclasses__():
        assert getattr(ttnn, c.__name__) is c and c.__name__.endswith(c.kind + "Error")


def test_out_of_device_memory(device):
    with pytest.raises(ttnn.OutOfDeviceMemoryError, match="out of L1"):
        ttnn.allocate_tensor_on_device((64 * 2048, 1024), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, ttnn.L1_MEMORY_CONFIG)


def test_dlpack_export_shares_the_host_tensors_memory(device):
    x = rand(2, 8, 16)
    host = ttnn.from_numpy(x, device=device).cpu()
    a = np.from_dlpack(host)
    assert a.shape == x.shape and np.array_equal(a, x)
    assert np.shares_memory(a, np.asarray(host))
    del host
    gc.collect()
    assert np.array_equal(a, x)  # the capsule keeps the memory alive
    b = np.from_dlpack(ttnn.from_numpy(x), copy=True)
    assert not np.shares_memory(b, x) and np.array_equal(b, x)
    assert ttnn.from_numpy(x).__dlpack_device__() == (1, 0)
    with pytest.raises(BufferError, match="cpu"):
        ttnn.from_numpy(x, device=device).__dlpack__()
