"""Saved traces: ``trace_save`` in this process, ``trace_load`` and replay in another (``python -c``), outputs
compared bit for bit; ``trace_get_info``; the loader's errors."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ttdrv as ttnn

# Both processes build this model, allocating in the same order, so the tensors the trace binds land at the addresses
# the saved trace uses: y = relu(x @ w + b) @ w2, its intermediates freed during the capture (the trace owns them).
MODEL = textwrap.dedent(
    """
    import numpy as np
    import ttdrv as ttnn

    N = 64

    def build(device):
        rng = np.random.default_rng(5)
        w = ttnn.from_numpy((rng.uniform(-1, 1, (N, N)) / 8).astype(np.float32), device=device,
                            memory_config=ttnn.DRAM_MEMORY_CONFIG)
        b = ttnn.from_numpy(rng.uniform(-0.1, 0.1, (1, N)).astype(np.float32), device=device,
                            memory_config=ttnn.DRAM_MEMORY_CONFIG)
        w2 = ttnn.from_numpy((rng.uniform(-1, 1, (N, N)) / 8).astype(np.float32), device=device,
                             memory_config=ttnn.DRAM_MEMORY_CONFIG)
        x = ttnn.allocate_tensor_on_device((N, N), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device,
                                           ttnn.L1_MEMORY_CONFIG)
        y = ttnn.allocate_tensor_on_device((N, N), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device,
                                           ttnn.L1_MEMORY_CONFIG)
        return w, b, w2, x, y

    def run(w, b, w2, x, y):
        t = ttnn.matmul(x, w, memory_config=ttnn.L1_MEMORY_CONFIG)
        u = ttnn.add(t, b, memory_config=ttnn.L1_MEMORY_CONFIG)
        ttnn.deallocate(t)
        r = ttnn.relu(u, memory_config=ttnn.L1_MEMORY_CONFIG)
        ttnn.deallocate(u)
        ttnn.matmul(r, w2, output_tensor=y)
        ttnn.deallocate(r)

    def inputs(k):
        return np.random.default_rng(100 + k).uniform(-1, 1, (N, N)).astype(np.float32)
    """
)

ITERATIONS = 5
SELECTOR = "emu:jitter=7,jitter_us=100"


def model():
    ns: dict = {}
    exec(MODEL, ns)  # the same source the child runs
    return ns


def test_a_saved_trace_replays_bit_identically_in_another_process(tmp_path: pathlib.Path):
    m = model()
    path = tmp_path / "mlp.trace"
    d = ttnn.open_device(device_id=300, selector=SELECTOR, trace_region_size=1 << 20)
    try:
        w, b, w2, x, y = m["build"](d)
        ttnn.copy_host_to_device_tensor(ttnn.from_numpy(m["inputs"](0)), x)
        m["run"](w, b, w2, x, y)  # compile run
        tid = ttnn.begin_trace_capture(d)
        m["run"](w, b, w2, x, y)
        ttnn.end_trace_capture(d, tid)
        info = ttnn.trace_get_info(d, tid)
        assert info["launches"] == 4 and info["stored"], info
        assert info["bindings"] == 5, info  # w, b, w2, x, y
        assert info["owned_ranges"] >= 1 and info["owned_bytes"] > 0, info
        assert info["event_records"] == 0 and info["event_waits"] == 0, info
        ttnn.trace_save(d, tid, path)
        want = []
        for k in range(ITERATIONS):
            ttnn.copy_host_to_device_tensor(ttnn.from_numpy(m["inputs"](k)), x)
            ttnn.execute_trace(d, tid, blocking=True)
            want.append(ttnn.to_numpy(y).copy())
        ttnn.release_trace(d, tid)
    finally:
        ttnn.close_device(d)

    out = tmp_path / "child.npy"
    child = MODEL + textwrap.dedent(
        f"""
        import sys
        d = ttnn.open_device(device_id=0, selector={SELECTOR!r}, trace_region_size=1 << 20)
        w, b, w2, x, y = build(d)
        # In any order: trace_load matches tensors to the file's bindings by memory, then address.
        tid = ttnn.trace_load(d, {str(path)!r}, [y, x, w2, b, w])
        info = ttnn.trace_get_info(d, tid)
        assert info["launches"] == 4 and info["bindings"] == 5, info
        got = []
        for k in range({ITERATIONS}):
            ttnn.copy_host_to_device_tensor(ttnn.from_numpy(inputs(k)), x)
            ttnn.execute_trace(d, tid, blocking=True)
            got.append(ttnn.to_numpy(y).copy())
        ttnn.release_trace(d, tid)
        ttnn.close_device(d)
        np.save({str(out)!r}, np.stack(got))
        """
    )
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = np.load(out)
    assert got.shape == (ITERATIONS, 64, 64)
    for k in range(ITERATIONS):
        # Bit for bit: the same kernels on the same data.
        assert got[k].tobytes() == want[k].tobytes(), f"iteration {k}: the replay in the child differs"
        assert np.any(want[k] != 0)


def test_trace_load_refuses_what_does_not_fit(tmp_path: pathlib.Path):
    m = model()
    path = tmp_path / "mlp.trace"
    d = ttnn.open_device(device_id=301, selector="emu", trace_region_size=1 << 20)
    try:
        w, b, w2, x, y = m["build"](d)
        m["run"](w, b, w2, x, y)
        tid = ttnn.begin_trace_capture(d)
        m["run"](w, b, w2, x, y)
        ttnn.end_trace_capture(d, tid)
        ttnn.trace_save(d, tid, path)
        ttnn.release_trace(d, tid)
        with pytest.raises(ttnn.InvalidArgumentError, match="bindings given"):
            ttnn.trace_load(d, path, [w, b, x, y])
        with pytest.raises(ttnn.InvalidArgumentError, match="cannot read the file"):
            ttnn.trace_load(d, tmp_path / "missing.trace", [w, b, w2, x, y])
        bad = tmp_path / "bad.trace"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        bad.write_bytes(bytes(data))
        with pytest.raises(ttnn.InvalidArgumentError, match="trace_load"):
            ttnn.trace_load(d, bad, [w, b, w2, x, y])
        # Nothing was left behind: the good file still loads and its trace replays.
        tid = ttnn.trace_load(d, path, [w, b, w2, x, y])
        ttnn.execute_trace(d, tid, blocking=True)
        ttnn.release_trace(d, tid)
        with pytest.raises(ttnn.InvalidStateError):
            ttnn.trace_get_info(d, tid)
    finally:
        ttnn.close_device(d)
