"""Patching a captured trace from Python: ``trace_bindings`` / ``trace_scalars``, ``trace_rebind`` for every later
replay, ``execute_trace(bindings=...)`` for one, ``trace_set_scalar``, a patch racing a replay on another queue
(refused, then ordered by an event), ``trace_get_info``'s new counts, and a saved trace loaded with its tensors
anywhere (``trace_file_bindings``, ``trace_load`` with a dict). The guide's section 1.3.2 ("Trace with Non-Persistent
L1 Input") is run the guide's way (re-allocate at the captured address and assert) and with rebinding (the input
anywhere, no assertion), each for ITERATIONS distinct inputs with a scale factor changed every iteration, every
output checked against numpy."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

import ttdrv as ttnn
from conftest import ITERATIONS, JITTERED, Mlp, make_inputs

N = 32


def values(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-4, 4, (N, N)).astype(np.float32)


def upload(device, v: np.ndarray):
    return ttnn.from_numpy(v, device=device, memory_config=ttnn.DRAM_MEMORY_CONFIG)


def reference(x: np.ndarray, b: np.ndarray, factor: float) -> np.ndarray:
    return ((x + b) * np.float32(factor)).astype(np.float32)


def read(t) -> np.ndarray:
    return np.asarray(ttnn.to_numpy(t.cpu())).reshape(N, N)


def model_ops(x, b, factor: float, cq_id: int):
    z = ttnn.add(x, b, memory_config=ttnn.DRAM_MEMORY_CONFIG, queue_id=cq_id)
    y = ttnn.mul(z, factor, memory_config=ttnn.DRAM_MEMORY_CONFIG, queue_id=cq_id)
    ttnn.deallocate(z)
    return y


def capture(device, x, b, factor: float, cq_id: int = 0):
    """Captures y = (x + b) * factor, its intermediate freed during the capture; returns (trace id, y)."""
    ttnn.deallocate(model_ops(x, b, factor, cq_id))  # the compile run
    ttnn.synchronize_device(device)
    tid = ttnn.begin_trace_capture(device, cq_id=cq_id)
    y = model_ops(x, b, factor, cq_id)
    ttnn.end_trace_capture(device, tid, cq_id=cq_id)
    return tid, y


def binding_of(device, tid, tensor) -> dict:
    (b,) = [b for b in ttnn.trace_bindings(device, tid) if b["address"] == tensor.buffer_address()]
    return b


def test_a_trace_lists_its_bindings_and_scalars(open_device):
    d = open_device()
    xv, bv = values(1), values(2)
    x, b = upload(d, xv), upload(d, bv)
    tid, y = capture(d, x, b, 2.5)
    bs = ttnn.trace_bindings(d, tid)
    assert [e["index"] for e in bs] == list(range(3))
    assert sorted(e["name"] for e in bs) == ["input0", "input1", "output0"], bs
    for e in bs:
        assert e["rebindable"] and e["words"] >= 1, e
        assert e["shape"] == (N, N) and e["dtype"] == ttnn.float32 and e["layout"] == ttnn.ROW_MAJOR_LAYOUT, e
        assert e["memory_config"] == ttnn.DRAM_MEMORY_CONFIG, e
    assert binding_of(d, tid, y)["output"] and not binding_of(d, tid, x)["output"]
    sc = ttnn.trace_scalars(d, tid)
    assert sc == [{"name": "scale.factor#0", "kind": "f32", "value": 2.5, "words": sc[0]["words"]}], sc
    assert sc[0]["words"] >= 1
    info = ttnn.trace_get_info(d, tid)
    assert info["bindings"] == 3 and info["rebindable"] == 3 and info["scalars"] == 1, info
    assert info["patchable_words"] >= 4, info
    ttnn.release_trace(d, tid)
    with pytest.raises(ttnn.InvalidStateError):
        ttnn.trace_bindings(d, tid)


def test_rebind_set_scalar_and_one_replay_bindings(open_device):
    d = open_device(selector="emu:slow_us=100")
    xv, bv, x2v, x3v = values(3), values(4), values(5), values(6)
    x, b = upload(d, xv), upload(d, bv)
    tid, y = capture(d, x, b, 2.0)
    ttnn.execute_trace(d, tid)
    np.testing.assert_array_equal(read(y), reference(xv, bv, 2.0))

    # Scalars: floats for the float kind; NaN, infinities, ints out of place and unknown names refused.
    ttnn.trace_set_scalar(d, tid, "scale.factor#0", 3.0)
    ttnn.execute_trace(d, tid)
    np.testing.assert_array_equal(read(y), reference(xv, bv, 3.0))
    ttnn.trace_set_scalar(d, tid, "scale.factor#0", -1)  # an int is a float here
    ttnn.execute_trace(d, tid)
    np.testing.assert_array_equal(read(y), reference(xv, bv, -1.0))
    for bad in (math.nan, math.inf):
        with pytest.raises(ttnn.InvalidArgumentError, match="finite"):
            ttnn.trace_set_scalar(d, tid, "scale.factor#0", bad)
    with pytest.raises(ttnn.InvalidArgumentError, match="pass a float"):
        ttnn.trace_set_scalar(d, tid, "scale.factor#0", "2")
    with pytest.raises(ttnn.InvalidArgumentError, match="scale.factor#0"):
        ttnn.trace_set_scalar(d, tid, "scale", 1.0)
    assert ttnn.trace_scalars(d, tid)[0]["value"] == -1.0

    # Rebinding for all later replays, by name and by index; the old input may then go.
    x2, y2 = upload(d, x2v), ttnn.allocate_tensor_on_device((N, N), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, d,
                                                             ttnn.DRAM_MEMORY_CONFIG)
    ix, iy = binding_of(d, tid, x), binding_of(d, tid, y)
    ttnn.trace_rebind(d, tid, {ix["name"]: x2, iy["index"]: y2})
    ttnn.deallocate(x)
    ttnn.execute_trace(d, tid)
    np.testing.assert_array_equal(read(y2), reference(x2v, bv, -1.0))
    np.testing.assert_array_equal(read(y), reference(xv, bv, -1.0))  # the old output kept its data

    # Refused rebindings change nothing.
    wide = ttnn.from_numpy(np.zeros((N, 2 * N), np.float32), device=d, memory_config=ttnn.DRAM_MEMORY_CONFIG)
    with pytest.raises(ttnn.InvalidArgumentError, match="spec"):
        ttnn.trace_rebind(d, tid, {ix["index"]: wide})
    with pytest.raises(ttnn.InvalidArgumentError, match="no binding named"):
        ttnn.trace_rebind(d, tid, {"weights": x2})
    with pytest.raises(ttnn.InvalidArgumentError, match="does not exist"):
        ttnn.trace_rebind(d, tid, {7: x2})
    with pytest.raises(ttnn.InvalidArgumentError, match="host tensor"):
        ttnn.trace_rebind(d, tid, {ix["index"]: ttnn.from_numpy(x2v)})
    other = open_device()
    with pytest.raises(ttnn.InvalidArgumentError, match="another device"):
        ttnn.trace_rebind(d, tid, {ix["index"]: upload(other, x2v)})

    # One replay with other tensors: the next is back on the trace's bindings.
    x3 = upload(d, x3v)
    y3 = ttnn.allocate_tensor_on_device((N, N), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, d, ttnn.DRAM_MEMORY_CONFIG)
    ttnn.execute_trace(d, tid, blocking=False, bindings={ix["index"]: x3, iy["name"]: y3})
    ttnn.execute_trace(d, tid, blocking=True)
    np.testing.assert_array_equal(read(y3), reference(x3v, bv, -1.0))
    np.testing.assert_array_equal(read(y2), reference(x2v, bv, -1.0))
    assert binding_of(d, tid, x2)["index"] == ix["index"]
    ttnn.release_trace(d, tid)


def test_a_patch_racing_a_replay_on_another_queue_needs_an_event(open_device):
    d = open_device(selector="emu:slow_us=2000", num_command_queues=2)
    xv, bv, x2v = values(7), values(8), values(9)
    x, b, x2 = upload(d, xv), upload(d, bv), upload(d, x2v)
    tid, y = capture(d, x, b, 3.0)
    ix = binding_of(d, tid, x)["index"]
    ttnn.execute_trace(d, tid, cq_id=1, blocking=False)
    with pytest.raises(ttnn.InvalidStateError, match="queue 1"):
        ttnn.trace_rebind(d, tid, {ix: x2})
    with pytest.raises(ttnn.InvalidStateError, match="queue 1"):
        ttnn.trace_set_scalar(d, tid, "scale.factor#0", 1.0)
    with pytest.raises(ttnn.InvalidStateError, match="queue 1"):
        ttnn.execute_trace(d, tid, bindings={ix: x2})
    ev = ttnn.record_event(d, 1)
    ttnn.trace_rebind(d, tid, {ix: x2}, after=[ev])
    ttnn.event_synchronize(ev)
    np.testing.assert_array_equal(read(y), reference(xv, bv, 3.0))  # the replay on queue 1 used the old input
    ttnn.execute_trace(d, tid, cq_id=1)
    np.testing.assert_array_equal(read(y), reference(x2v, bv, 3.0))
    ttnn.trace_set_scalar(d, tid, "scale.factor#0", 0.5)  # that replay is known done: no event needed
    ttnn.execute_trace(d, tid)
    np.testing.assert_array_equal(read(y), reference(x2v, bv, 0.5))
    ttnn.release_trace(d, tid)


def factors(n: int) -> list[float]:
    return [0.5 + 0.03125 * k * (-1 if k % 2 else 1) for k in range(n)]


def check(model: Mlp, inputs, outputs, fs) -> None:
    wrong = 0
    for x, out, f in zip(inputs, outputs, fs):
        got = np.asarray(out.to_numpy()).reshape(-1, model.reference(x).shape[-1])
        want = model.reference(x) * np.float32(f)
        wrong += not np.all(np.abs(got - want) <= 1e-4 * (1 + np.abs(want)))
    assert len(outputs) == len(inputs) and wrong == 0, f"wrong outputs in {wrong} of {len(inputs)} iterations"


def scaled(model: Mlp, consume_input: bool = True):
    def run(x):
        o = model(x, consume_input=consume_input)
        y = ttnn.mul(o, 1.0, memory_config=ttnn.DRAM_MEMORY_CONFIG)
        ttnn.deallocate(o)
        return y

    return run


def test_guide_1_3_2_the_guides_way_with_a_scalar_per_iteration(open_device):
    d = open_device(selector=JITTERED, trace_region_size=800768)
    model, inputs, fs = Mlp(ttnn, d), make_inputs(), factors(ITERATIONS)
    host = [ttnn.from_numpy(x) for x in inputs]
    run = scaled(model)
    x = host[0].to(d, ttnn.L1_MEMORY_CONFIG)
    out = run(x)  # compile
    x = host[0].to(d, ttnn.L1_MEMORY_CONFIG)
    addr = x.buffer_address()
    out.deallocate(force=True)
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    out = run(x)
    x = ttnn.allocate_tensor_on_device(x.shape, x.dtype, x.layout, d, ttnn.L1_MEMORY_CONFIG)
    assert addr == x.buffer_address()
    ttnn.end_trace_capture(d, tid, cq_id=0)
    (name,) = [s["name"] for s in ttnn.trace_scalars(d, tid)]
    outputs = []
    for it in range(ITERATIONS):
        ttnn.copy_host_to_device_tensor(host[it], x, cq_id=0)
        ttnn.trace_set_scalar(d, tid, name, fs[it])
        ttnn.execute_trace(d, tid, cq_id=0, blocking=False)
        outputs.append(out.cpu(blocking=False))
    ttnn.synchronize_device(d)
    check(model, inputs, outputs, fs)
    ttnn.release_trace(d, tid)


def test_guide_1_3_2_with_rebinding_and_no_assertion(open_device):
    d = open_device(selector=JITTERED, trace_region_size=800768)
    model, inputs, fs = Mlp(ttnn, d), make_inputs(), factors(ITERATIONS)
    host = [ttnn.from_numpy(x) for x in inputs]
    # With rebinding the input need not be freed inside the capture (nothing must land at its address): kept alive,
    # no intermediate of the trace can take its range, so the trace can be rebound to an input anywhere. (Freed inside
    # the capture, an intermediate may reuse its range, and the driver refuses to rebind it:
    # test_an_input_freed_inside_the_capture_is_not_rebindable.)
    run = scaled(model, consume_input=False)
    out = run(host[0].to(d, ttnn.L1_MEMORY_CONFIG))  # compile
    x = host[0].to(d, ttnn.L1_MEMORY_CONFIG)
    captured = x.buffer_address()
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    out = run(x)
    ttnn.end_trace_capture(d, tid, cq_id=0)
    ttnn.deallocate(x)  # its range is free now: the first input below could land there, the blocker takes it
    (ib,) = [b for b in ttnn.trace_bindings(d, tid) if b["address"] == captured and not b["output"]]
    # The captured address taken by another tensor: every input below lands elsewhere.
    blocker = ttnn.allocate_tensor_on_device(ib["shape"], ib["dtype"], ib["layout"], d, ib["memory_config"])
    outputs, addresses, prev = [], set(), None
    for it in range(ITERATIONS):
        x = host[it].to(d, ttnn.L1_MEMORY_CONFIG)
        addresses.add(x.buffer_address())
        ttnn.trace_rebind(d, tid, {ib["name"]: x})
        ttnn.trace_set_scalar(d, tid, "scale.factor#0", fs[it])
        ttnn.execute_trace(d, tid, cq_id=0, blocking=False)
        outputs.append(out.cpu(blocking=False))
        if prev is not None:
            ttnn.deallocate(prev)
        prev = x
    ttnn.synchronize_device(d)
    check(model, inputs, outputs, fs)
    assert captured not in addresses and len(addresses) >= 2, addresses
    del blocker
    ttnn.release_trace(d, tid)


def test_a_saved_trace_loads_with_its_tensors_anywhere(open_device, tmp_path: pathlib.Path):
    path = tmp_path / "patch.trace"
    xv, bv = values(20), values(21)
    d = open_device()
    x, b = upload(d, xv), upload(d, bv)
    tid, y = capture(d, x, b, 1.5)
    ttnn.trace_save(d, tid, path)
    live = ttnn.trace_bindings(d, tid)
    ttnn.release_trace(d, tid)

    saved = ttnn.trace_file_bindings(path)
    assert [(s["name"], s["address"], s["rebindable"]) for s in saved] == [
        (s["name"], s["address"], s["rebindable"]) for s in live
    ]
    fsc = ttnn.trace_file_scalars(path)
    assert [(s["name"], s["kind"], s["value"]) for s in fsc] == [("scale.factor#0", "f32", 1.5)], fsc

    d2 = open_device()
    # Shifts every tensor below past the saver's tensors and the range the trace owns (its intermediate, which must
    # be free at the load: the pad goes first).
    pad = ttnn.from_numpy(np.zeros((4 * N, N), np.float32), device=d2, memory_config=ttnn.DRAM_MEMORY_CONFIG)
    x2, b2 = upload(d2, xv), upload(d2, bv)
    y2 = ttnn.allocate_tensor_on_device((N, N), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, d2, ttnn.DRAM_MEMORY_CONFIG)
    name = {s["address"]: s["name"] for s in saved}
    mine = {name[x.buffer_address()]: x2, name[b.buffer_address()]: b2, name[y.buffer_address()]: y2}
    assert all(mine[s["name"]].buffer_address() != s["address"] for s in saved)
    ttnn.deallocate(pad)
    tid2 = ttnn.trace_load(d2, path, mine)
    ttnn.execute_trace(d2, tid2)
    np.testing.assert_array_equal(read(y2), reference(xv, bv, 1.5))
    ttnn.trace_set_scalar(d2, tid2, "scale.factor#0", 4.0)
    ttnn.execute_trace(d2, tid2)
    np.testing.assert_array_equal(read(y2), reference(xv, bv, 4.0))
    ttnn.release_trace(d2, tid2)
    # A list in the saver's allocation order is matched by spec, in order.
    tid3 = ttnn.trace_load(d2, path, [x2, b2, y2])
    ttnn.execute_trace(d2, tid3)
    np.testing.assert_array_equal(read(y2), reference(xv, bv, 1.5))
    ttnn.release_trace(d2, tid3)

    with pytest.raises(ttnn.InvalidArgumentError, match="no binding named"):
        ttnn.trace_load(d2, path, {"weights": x2})
    with pytest.raises(ttnn.InvalidArgumentError, match="no tensor for binding"):
        ttnn.trace_load(d2, path, {saved[0]["name"]: x2})
    bad = tmp_path / "bad.trace"
    bad.write_bytes(b"not a trace")
    with pytest.raises(ttnn.InvalidArgumentError, match="not a valid trace file"):
        ttnn.trace_file_bindings(bad)
    with pytest.raises(ttnn.InvalidArgumentError, match="cannot read"):
        ttnn.trace_file_scalars(tmp_path / "missing.trace")


def test_an_input_freed_inside_the_capture_is_not_rebindable(open_device):
    """The guide's §1.3.2 model frees its input during the capture; its intermediates may then reuse that range, so
    the input's address words and theirs are mixed and rebinding the input alone would leave the trace writing the
    old range. The driver says so instead."""
    d = open_device(selector=JITTERED, trace_region_size=800768)
    model = Mlp(ttnn, d)
    host = ttnn.from_numpy(make_inputs(1)[0])
    run = scaled(model)
    run(host.to(d, ttnn.L1_MEMORY_CONFIG))  # compile
    x = host.to(d, ttnn.L1_MEMORY_CONFIG)
    captured = x.buffer_address()
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    run(x)
    ttnn.end_trace_capture(d, tid, cq_id=0)
    (ib,) = [b for b in ttnn.trace_bindings(d, tid) if b["address"] == captured and not b["output"]]
    assert not ib["rebindable"], ib
    other = host.to(d, ttnn.L1_MEMORY_CONFIG)
    with pytest.raises(ttnn.InvalidStateError, match="used by another buffer during the capture"):
        ttnn.trace_rebind(d, tid, {ib["name"]: other})
    ttnn.release_trace(d, tid)
