"""Fixtures shared by the tests: the emulated devices, the MLP the guide's examples run (built from the package's
ops, with a numpy reference), distinct inputs, and the check of every output against the reference."""

from __future__ import annotations

import numpy as np
import pytest

import ttdrv

# Every example runs this many distinct inputs through its pipeline and checks each output.
ITERATIONS = 100
BATCH, IN, HIDDEN, OUT = 32, 64, 128, 64
# The C examples' device: seeded jitter (random per-queue delays), so a missing wait shows as wrong data.
JITTERED = "emu:jitter=7,jitter_us=100"


class Mlp:
    """The guide's ``run_model``: an MLP of the package's ops (matmul, add with a broadcast bias row, relu), whose
    weights live in DRAM. Like a ttnn model it consumes its input (deallocated after the first op) and frees its
    intermediates; intermediates are in L1 and the output in DRAM, so nothing the model keeps lands where its
    input was (the guide's sections 1.3.2 and 3.3 re-allocate the input there at the end of capture)."""

    def __init__(self, ttnn, device, seed: int = 17, dims=(IN, HIDDEN, HIDDEN, OUT), layout=None):
        rng = np.random.default_rng(seed)
        self.ttnn = ttnn
        self.host = []
        self.layers = []
        for k, n in zip(dims[:-1], dims[1:]):
            w = (rng.uniform(-1, 1, (k, n)) / np.sqrt(k)).astype(np.float32)
            b = rng.uniform(-0.1, 0.1, (1, n)).astype(np.float32)
            self.host.append((w, b))
            self.layers.append(
                (
                    ttnn.from_numpy(w, ttnn.float32, layout=layout or ttnn.ROW_MAJOR_LAYOUT, device=device,
                                    memory_config=ttnn.DRAM_MEMORY_CONFIG),
                    ttnn.from_numpy(b, ttnn.float32, layout=layout or ttnn.ROW_MAJOR_LAYOUT, device=device,
                                    memory_config=ttnn.DRAM_MEMORY_CONFIG),
                )
            )

    @property
    def ops(self) -> int:
        return 3 * len(self.layers) - 1

    def __call__(self, x, consume_input: bool = True):
        ttnn = self.ttnn
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            y = ttnn.matmul(x, w, memory_config=ttnn.L1_MEMORY_CONFIG)
            if i > 0 or consume_input:
                ttnn.deallocate(x)
            z = ttnn.add(y, b, memory_config=ttnn.DRAM_MEMORY_CONFIG if i == last else ttnn.L1_MEMORY_CONFIG)
            ttnn.deallocate(y)
            if i == last:
                x = z
            else:
                x = ttnn.relu(z)
                ttnn.deallocate(z)
        return x

    def reference(self, x: np.ndarray) -> np.ndarray:
        a = x.reshape(-1, x.shape[-1]).astype(np.float32)
        for i, (w, b) in enumerate(self.host):
            a = a @ w + b
            if i + 1 < len(self.host):
                a = np.maximum(a, 0)
        return a


def make_inputs(n: int = ITERATIONS, shape=(1, 1, BATCH, IN), seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(n)]


def count_wrong(model: Mlp, inputs, outputs) -> int:
    """Iterations whose output differs from the reference (the C examples' tolerance)."""
    wrong = 0
    for x, out in zip(inputs, outputs):
        got = np.asarray(out.to_numpy()).reshape(-1, OUT)
        want = model.reference(x)
        if not np.all(np.abs(got - want) <= 1e-4 * (1 + np.abs(want))):
            wrong += 1
    return wrong


def check_outputs(model: Mlp, inputs, outputs) -> None:
    assert len(outputs) == len(inputs), f"{len(outputs)} outputs for {len(inputs)} inputs"
    wrong = count_wrong(model, inputs, outputs)
    assert wrong == 0, f"wrong outputs in {wrong} of {len(inputs)} iterations"


class WithoutWait:
    """The ``ttdrv`` module with every ``wait_for_event`` on one event skipped: the event is the
    ``event_index``-th one the example creates. Runs an example with one of its waits removed."""

    def __init__(self, event_index: int):
        self._index = event_index
        self._events: list = []

    def __getattr__(self, name):
        return getattr(ttdrv, name)

    def create_event(self, device):
        ev = ttdrv.create_event(device)
        self._events.append(ev)
        return ev

    def wait_for_event(self, cq_id, event):
        if len(self._events) > self._index and event is self._events[self._index]:
            return
        ttdrv.wait_for_event(cq_id, event)


@pytest.fixture
def open_device():
    """``open_device(**kwargs)`` that closes every device it opened at the end of the test."""
    opened = []

    def open_(**kwargs):
        d = ttdrv.open_device(device_id=len(opened) + 100, **kwargs)
        opened.append(d)
        return d

    yield open_
    for d in opened:
        ttdrv.close_device(d)
