"""Measures the Python layer (a benchmark, not a test; docs/python.md shows its table).

1. Per-call cost of three calls from Python beside the same driver call in a Rust loop, in the same run on the
   same (unpaced) emulated device: execute_trace (non-blocking), one op call (add, a new output each call) and
   copy_host_to_device_tensor of 4 KiB. Python minus Rust is what the Python layer adds per call.
2. The guide's claim, from Python: a host-bound MLP made of the package's ops, eager vs traced vs traced with two
   command queues, on the paced emulated device, in wall-clock throughput. Python's own cost per op is the host
   cost here; nothing is modelled on the host side.

Run: python python/bench/bench.py [--quick]  (from a virtual environment with the package installed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import ttdrv as ttnn

# The MLP and the paced device of part 2 (docs/python.md states them with the table).
MLP_DIMS = (16, 32, 32, 16)
MLP_BATCH = 4
PACED = "emu:paced,queues=2,launch_ns=500,core_gflops=50,core_gbps=50,pcie_gbps=12"


def best_of(reps: int, f) -> float:
    """The fastest of `reps` runs: the host is shared (the emulator's engine threads, other processes), and the
    fastest run is the one least disturbed."""
    return min(f() for _ in range(reps))


def per_call(reps: int, n: int) -> list[tuple[str, float, float]]:
    d = ttnn.open_device(device_id=0, selector="emu", num_command_queues=1)
    rows = []
    # execute_trace of a one-op trace.
    a = ttnn.from_numpy(np.ones((16, 32), np.float32), device=d, memory_config=ttnn.L1_MEMORY_CONFIG)
    ttnn.relu(a)
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    ttnn.relu(a)
    ttnn.end_trace_capture(d, tid, cq_id=0)
    ttnn.synchronize_device(d)

    def py_trace() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            ttnn.execute_trace(d, tid, cq_id=0, blocking=False)
        dt = (time.perf_counter_ns() - t0) / n
        ttnn.synchronize_device(d)
        return dt

    def rust_trace() -> float:
        dt = ttnn._ttdrv._rust_execute_trace_ns(d, tid, n, 0)
        ttnn.synchronize_device(d)
        return dt

    rows.append(("execute_trace(blocking=False)", best_of(reps, py_trace), best_of(reps, rust_trace)))

    # One op call: add with a broadcast row, a new L1 output each call, dropped by the next. Small, so that the
    # emulated device keeps up and the loop measures the host.
    x = ttnn.from_numpy(np.ones((16, 32), np.float32), device=d, memory_config=ttnn.L1_MEMORY_CONFIG)
    row = ttnn.from_numpy(np.ones((1, 32), np.float32), device=d, memory_config=ttnn.L1_MEMORY_CONFIG)
    m = max(n // 10, 100)

    def py_add() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(m):
            y = ttnn.add(x, row)
        dt = (time.perf_counter_ns() - t0) / m
        del y
        ttnn.synchronize_device(d)
        return dt

    def rust_add() -> float:
        dt = ttnn._ttdrv._rust_add_ns(x, row, m, 0)
        ttnn.synchronize_device(d)
        return dt

    rows.append(("op call: add(a, b) -> new tensor", best_of(reps, py_add), best_of(reps, rust_add)))

    # copy_host_to_device_tensor of 4 KiB.
    host = ttnn.from_numpy(np.ones((32, 32), np.float32))
    dev_t = ttnn.allocate_tensor_on_device((32, 32), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, d)

    def py_copy() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            ttnn.copy_host_to_device_tensor(host, dev_t, cq_id=0)
        dt = (time.perf_counter_ns() - t0) / n
        ttnn.synchronize_device(d)
        return dt

    def rust_copy() -> float:
        dt = ttnn._ttdrv._rust_write_ns(host, dev_t, n, 0)
        ttnn.synchronize_device(d)
        return dt

    rows.append(("copy_host_to_device_tensor, 4 KiB", best_of(reps, py_copy), best_of(reps, rust_copy)))
    ttnn.release_trace(d, tid)
    ttnn.close_device(d)
    return rows


class Mlp:
    """The MLP of part 2: matmul, add (bias row), relu per layer, from the package's ops; consumes its input."""

    def __init__(self, device):
        rng = np.random.default_rng(1)
        self.layers = []
        for k, n in zip(MLP_DIMS[:-1], MLP_DIMS[1:]):
            w = rng.uniform(-1, 1, (k, n)).astype(np.float32) / np.sqrt(k)
            b = rng.uniform(-0.1, 0.1, (1, n)).astype(np.float32)
            self.layers.append((ttnn.from_numpy(w, device=device), ttnn.from_numpy(b, device=device)))
            self.host = getattr(self, "host", []) + [(w, b)]

    def __call__(self, x):
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            y = ttnn.matmul(x, w, memory_config=ttnn.L1_MEMORY_CONFIG)
            ttnn.deallocate(x)
            z = ttnn.add(y, b, memory_config=ttnn.DRAM_MEMORY_CONFIG if i == last else ttnn.L1_MEMORY_CONFIG)
            ttnn.deallocate(y)
            if i == last:
                x = z
            else:
                x = ttnn.relu(z)
                ttnn.deallocate(z)
        return x

    def reference(self, x):
        a = x
        for i, (w, b) in enumerate(self.host):
            a = a @ w + b
            if i + 1 < len(self.host):
                a = np.maximum(a, 0)
        return a


def pipelines(iters: int) -> list[tuple[str, float, float]]:
    """(configuration, iterations per second, host microseconds per iteration) for the three pipelines."""
    d = ttnn.open_device(device_id=1, selector=PACED, num_command_queues=2)
    model = Mlp(d)
    shape = (MLP_BATCH, MLP_DIMS[0])
    xs = [np.random.default_rng(i).uniform(-1, 1, shape).astype(np.float32) for i in range(8)]
    l1 = ttnn.L1_MEMORY_CONFIG
    inp = ttnn.allocate_tensor_on_device(shape, ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, d, ttnn.DRAM_MEMORY_CONFIG)
    out_rows = []

    def run(name, step, check):
        outs = []
        step(0, outs)
        ttnn.synchronize_device(d)
        outs.clear()
        t0 = time.perf_counter()
        for i in range(iters):
            step(i, outs)
        host = time.perf_counter() - t0
        ttnn.synchronize_device(d)
        wall = time.perf_counter() - t0
        for i, o in enumerate(outs[:16]):
            want = model.reference(xs[i % len(xs)])
            assert np.allclose(check(o), want, rtol=1e-4, atol=1e-4), f"{name}: wrong output {i}"
        out_rows.append((name, iters / wall, host / iters * 1e6))

    # Eager, one queue: write, move to L1, the model op by op, read back.
    def eager(i, outs):
        ttnn.copy_host_to_device_tensor(xs[i % len(xs)], inp, cq_id=0)
        outs.append(model(ttnn.to_memory_config(inp, l1)).cpu(blocking=False))

    run("eager, 1 CQ", eager, lambda o: o.to_numpy())

    # Traced, one queue (the guide's 1.3.1).
    ttnn.copy_host_to_device_tensor(xs[0], inp, cq_id=0)
    model(ttnn.to_memory_config(inp, l1))
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    out = model(ttnn.to_memory_config(inp, l1))
    ttnn.end_trace_capture(d, tid, cq_id=0)

    def traced(i, outs):
        ttnn.copy_host_to_device_tensor(xs[i % len(xs)], inp, cq_id=0)
        ttnn.execute_trace(d, tid, cq_id=0, blocking=False)
        outs.append(out.cpu(blocking=False))

    run("traced, 1 CQ", traced, lambda o: o.to_numpy())
    ttnn.release_trace(d, tid)
    del out

    # Traced with input writes on CQ 1 (the guide's 3.3.1).
    op_event, write_event = ttnn.create_event(d), ttnn.create_event(d)
    ttnn.record_event(0, op_event)
    # The trace's input is a persistent L1 tensor that the reshard of each iteration overwrites in place.
    input_l1 = ttnn.allocate_tensor_on_device(shape, ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, d, l1)
    ttnn.reshard(inp, l1, input_l1)
    model(ttnn.to_memory_config(input_l1, l1))
    tid = ttnn.begin_trace_capture(d, cq_id=0)
    out = model(ttnn.to_memory_config(input_l1, l1))
    ttnn.end_trace_capture(d, tid, cq_id=0)

    def two_cq(i, outs):
        ttnn.wait_for_event(1, op_event)
        ttnn.copy_host_to_device_tensor(xs[i % len(xs)], inp, cq_id=1)
        ttnn.record_event(1, write_event)
        ttnn.wait_for_event(0, write_event)
        ttnn.reshard(inp, l1, input_l1)
        ttnn.record_event(0, op_event)
        ttnn.execute_trace(d, tid, cq_id=0, blocking=False)
        outs.append(out.cpu(blocking=False))

    run("traced, 2 CQs", two_cq, lambda o: o.to_numpy())
    ttnn.release_trace(d, tid)
    ttnn.close_device(d)
    return out_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    args = ap.parse_args()
    reps, n, iters = (3, 2000, 300) if args.quick else (7, 20000, 3000)
    print(f"ttdrv {ttnn.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print()
    print("| call | Python | Rust API | Python layer adds |")
    print("|---|---:|---:|---:|")
    for name, py, rs in per_call(reps, n):
        print(f"| {name} | {py:.0f} ns | {rs:.0f} ns | {py - rs:.0f} ns |")
    print()
    print(f"MLP {list(MLP_DIMS)}, batch {MLP_BATCH}, {3 * (len(MLP_DIMS) - 1) - 1} ops + to_memory_config per run; "
          f"device `{PACED}`; {iters} iterations")
    print()
    print("| pipeline | iterations/s | host us/iteration | vs eager |")
    print("|---|---:|---:|---:|")
    rows = pipelines(iters)
    eager = rows[0][1]
    for name, ips, host_us in rows:
        print(f"| {name} | {ips:.0f} | {host_us:.1f} | {ips / eager:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
