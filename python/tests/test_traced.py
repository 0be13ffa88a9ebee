"""The trace helper: capture on the first call, replay afterwards, refuse tensors of other specs."""

from __future__ import annotations

import numpy as np
import pytest

import ttdrv as ttnn
from conftest import JITTERED, Mlp, check_outputs, make_inputs


def test_traced_model_matches_numpy_for_every_call(open_device):
    device = open_device(selector=JITTERED)
    model = Mlp(ttnn, device)
    calls = []

    @ttnn.traced(device)
    def run(x):
        calls.append(1)
        # The model consumes its input: give it a copy in L1, so the traced input (the slot) stays.
        return model(ttnn.to_memory_config(x, ttnn.L1_MEMORY_CONFIG))

    inputs = make_inputs(100)
    outputs = []
    for i, x in enumerate(inputs):
        y = run(x if i % 2 else ttnn.from_numpy(x))  # numpy arrays and host tensors alike
        outputs.append(y.cpu(blocking=False))
        if i == 0:
            assert run.captured and len(calls) == 2  # the compile run and the capture
    assert len(calls) == 2  # later calls replay; the function no longer runs
    check_outputs(model, inputs, outputs)
    run.release()
    assert not run.captured


def test_traced_takes_device_tensors_and_several_outputs(open_device):
    device = open_device(selector="emu")

    with ttnn.traced(device)(lambda a, b, k: (ttnn.add(a, b), ttnn.mul(a, k))) as f:
        for i in range(5):
            a_h = np.full((8, 16), i, np.float32)
            a = ttnn.from_numpy(a_h, device=device, memory_config=ttnn.L1_MEMORY_CONFIG)
            b = ttnn.from_numpy(np.ones((1, 16), np.float32), device=device)
            s, p = f(a, b, 3.0)
            assert np.array_equal(s.to_numpy(), a_h + 1) and np.array_equal(p.to_numpy(), a_h * 3)


def test_traced_refuses_other_specs(open_device):
    device = open_device(selector="emu")
    f = ttnn.traced(device)(lambda x, k: ttnn.mul(ttnn.to_memory_config(x, ttnn.L1_MEMORY_CONFIG), k))
    f(np.ones((4, 8), np.float32), 2.0)
    with pytest.raises(ttnn.InvalidArgumentError, match="argument 0"):
        f(np.ones((4, 9), np.float32), 2.0)
    with pytest.raises(ttnn.InvalidArgumentError, match="argument 0"):
        f(ttnn.from_numpy(np.ones((4, 8), np.float32), ttnn.bfloat16), 2.0)
    with pytest.raises(ttnn.InvalidArgumentError, match="argument 1"):
        f(np.ones((4, 8), np.float32), 3.0)
    with pytest.raises(ttnn.InvalidArgumentError, match="captured with 2 arguments"):
        f(np.ones((4, 8), np.float32))
    assert np.array_equal(f(np.full((4, 8), 5, np.float32), 2.0).to_numpy(), np.full((4, 8), 10, np.float32))


def test_traced_function_must_keep_its_inputs(open_device):
    device = open_device(selector="emu")

    def consumes(x):
        y = ttnn.relu(x)
        ttnn.deallocate(x)
        return y

    with pytest.raises(ttnn.InvalidStateError, match="deallocated its input 0"):
        ttnn.traced(device)(consumes)(np.ones((4, 4), np.float32))
