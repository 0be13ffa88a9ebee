"""A trace helper beyond ttnn: capture a function on its first call, replay it afterwards.

The guide's section 1.3.1 ("Trace With Persistent DRAM Input") by hand is: allocate persistent inputs, copy the
input in, run once to compile, capture, then per call copy the input in and execute the trace. ``traced`` does
exactly that for any function of tensors::

    @ttdrv.traced(device)
    def model(x):
        return run_model(ttdrv.to_memory_config(x, l1_config))

    y = model(host_input)        # first call: stage, compile run, capture, replay
    y = model(next_host_input)   # later calls: stage the inputs, replay (one command)

Inputs are staged into persistent device tensors ("slots") of the captured specs: a host tensor or numpy array
is written into a DRAM tensor (``input_memory_config``) on ``cq_id``; a device tensor is copied on the device into
a tensor with its own memory config. Other arguments (numbers, strings, None) are baked into the trace and must be
equal on every call. A later call whose tensors differ in shape, dtype, layout or memory config from the captured
ones raises ``InvalidArgumentError`` naming the argument: the trace's addresses and shapes are fixed.

The function must not deallocate its input tensors (the slots are the trace's inputs); copy them first if it
consumes its input, as ``to_memory_config`` above does. It returns a tensor or a tuple/list of tensors; every call
returns the same output tensors, overwritten by the next call: read them (``cpu(blocking=False)``) before calling
again (reads enqueued on ``cq_id`` before the next call see this call's results).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as _np

from . import _ttdrv


def _spec(i: int, a: Any):
    """The captured description of argument ``i``: ("tensor", where, shape, dtype, layout, memory config) or
    ("value", a)."""
    if isinstance(a, _ttdrv.Tensor):
        if a.storage_type() == "DEVICE":
            return ("device", tuple(a.shape), a.dtype, a.layout, a.memory_config())
        if a.storage_type() == "HOST":
            return ("host", tuple(a.shape), a.dtype, a.layout, None)
        raise _ttdrv.InvalidStateError(f"argument {i} was deallocated")
    if isinstance(a, _np.ndarray):
        return ("host", tuple(a.shape if a.ndim else (1,)), _ttdrv.DataType.FLOAT32, _ttdrv.Layout.ROW_MAJOR, None)
    return ("value", a)


def _tensors(out: Any) -> list:
    if isinstance(out, _ttdrv.Tensor):
        return [out]
    if isinstance(out, (tuple, list)) and all(isinstance(t, _ttdrv.Tensor) for t in out):
        return list(out)
    raise _ttdrv.InvalidArgumentError(
        f"a traced function returns a tensor or a tuple/list of tensors, not {type(out).__name__}"
    )


class TracedFunction:
    """``fn`` captured on ``device`` at its first call and replayed afterwards; see the module docstring."""

    def __init__(self, fn: Callable[..., Any], device, *, cq_id: int = 0, input_memory_config=None):
        self.fn = fn
        self.device = device
        self.cq_id = cq_id
        self.input_memory_config = input_memory_config or _ttdrv.MemoryConfig(
            _ttdrv.TensorMemoryLayout.INTERLEAVED, _ttdrv.BufferType.DRAM
        )
        self.trace_id: int | None = None
        self._specs: list | None = None
        self._slots: list = []
        self._outputs: Any = None
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", "traced")

    @property
    def captured(self) -> bool:
        """Whether the first call has captured the trace."""
        return self.trace_id is not None

    def _stage(self, args: tuple) -> None:
        for i, (a, spec, slot) in enumerate(zip(args, self._specs, self._slots)):
            kind = spec[0]
            if kind == "value":
                continue
            if kind == "host":
                _ttdrv.copy_host_to_device_tensor(a, slot, cq_id=self.cq_id)
            else:
                _ttdrv.reshard(a, spec[4], slot, queue_id=self.cq_id)

    def _check(self, args: tuple) -> None:
        if len(args) != len(self._specs):
            raise _ttdrv.InvalidArgumentError(
                f"{self.__name__} was captured with {len(self._specs)} arguments; this call passes {len(args)}"
            )
        for i, (a, want) in enumerate(zip(args, self._specs)):
            got = _spec(i, a)
            if got != want:
                raise _ttdrv.InvalidArgumentError(
                    f"{self.__name__}: argument {i} is {got!r}, but the trace was captured with {want!r}; a trace "
                    "replays fixed shapes and addresses: pass a tensor of the captured spec (or make another "
                    "traced function for this one)"
                )

    def _capture(self, args: tuple) -> Any:
        self._specs = [_spec(i, a) for i, a in enumerate(args)]
        self._slots = []
        for spec in self._specs:
            if spec[0] == "value":
                self._slots.append(spec[1])
                continue
            _, shape, dtype, layout, mem = spec
            self._slots.append(
                _ttdrv.allocate_tensor_on_device(shape, dtype, layout, self.device, mem or self.input_memory_config)
            )
        self._stage(args)
        # Compile run: every op the trace will hold must have run once.
        for t in _tensors(self.fn(*self._slots)):
            t.deallocate(force=True)
        for i, (spec, slot) in enumerate(zip(self._specs, self._slots)):
            if spec[0] != "value" and not slot.is_allocated():
                raise _ttdrv.InvalidStateError(
                    f"{self.__name__} deallocated its input {i}; a traced function must keep its inputs (the trace "
                    "reads them at every replay): copy an input it consumes first, e.g. with to_memory_config"
                )
        tid = _ttdrv.begin_trace_capture(self.device, cq_id=self.cq_id)
        try:
            out = self.fn(*self._slots)
            outputs = _tensors(out)
        except BaseException:
            _ttdrv.end_trace_capture(self.device, tid, cq_id=self.cq_id)
            _ttdrv.release_trace(self.device, tid)
            raise
        _ttdrv.end_trace_capture(self.device, tid, cq_id=self.cq_id)
        self.trace_id = tid
        self._outputs = out
        del outputs
        _ttdrv.execute_trace(self.device, tid, cq_id=self.cq_id, blocking=False)
        return out

    def __call__(self, *args: Any) -> Any:
        if self.trace_id is None:
            return self._capture(args)
        self._check(args)
        self._stage(args)
        _ttdrv.execute_trace(self.device, self.trace_id, cq_id=self.cq_id, blocking=False)
        return self._outputs

    def release(self) -> None:
        """Releases the trace, its input slots and its outputs; the next call captures again."""
        if self.trace_id is not None:
            _ttdrv.release_trace(self.device, self.trace_id)
            self.trace_id = None
        for s in self._slots:
            if isinstance(s, _ttdrv.Tensor):
                s.deallocate(force=True)
        if self._outputs is not None:
            for t in _tensors(self._outputs):
                t.deallocate(force=True)
        self._slots, self._specs, self._outputs = [], None, None

    def __enter__(self) -> "TracedFunction":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def traced(device, *, cq_id: int = 0, input_memory_config=None) -> Callable[[Callable[..., Any]], TracedFunction]:
    """Decorator: ``@traced(device)`` turns a function of tensors into a ``TracedFunction`` that captures it on
    its first call and replays the trace afterwards (see the module docstring)."""

    def wrap(fn: Callable[..., Any]) -> TracedFunction:
        return TracedFunction(fn, device, cq_id=cq_id, input_memory_config=input_memory_config)

    return wrap
