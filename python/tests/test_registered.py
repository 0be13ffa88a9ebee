"""Registered host memory (ttdrv.register_host_memory): device tensors written from and read into a registered numpy
array with no staging copy, in DRAM and L1, blocking and not; the argument rules; unregister, after which the
array is refused and ordinary again."""

from __future__ import annotations

import numpy as np
import pytest

import ttdrv as ttnn


@pytest.fixture
def device(open_device):
    return open_device(selector="emu")


def rand(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def test_aligned_empty_is_page_aligned():
    for shape in [(1024,), (64, 256), (3, 4096)]:
        a = ttnn.aligned_empty(shape, np.float32)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % ttnn.HOST_PAGE_SIZE == 0


@pytest.mark.parametrize("mem", ["DRAM", "L1"])
@pytest.mark.parametrize("blocking", [True, False])
def test_round_trip_through_registered_memory(device, mem, blocking):
    memory_config = getattr(ttnn, f"{mem}_MEMORY_CONFIG")
    host = ttnn.aligned_empty((4, 64, 256), np.float32)  # four 64 KiB slots
    host[...] = 0
    with ttnn.register_host_memory(device, host) as hm:
        assert hm.is_registered and hm.nbytes == host.nbytes and hm.array is host
        x = rand(64, 256, seed=1)
        host[1] = x
        t = ttnn.allocate_tensor_on_device((64, 256), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device, memory_config)
        slot = host[0].nbytes
        ttnn.copy_registered_to_device_tensor(hm, t, offset=slot, blocking=blocking)
        if not blocking:
            ttnn.synchronize_device(device)
        np.testing.assert_array_equal(ttnn.to_numpy(t), x)
        # The device computes on it, and the result comes back into another slot.
        y = ttnn.relu(t, memory_config=memory_config)
        ttnn.copy_device_tensor_to_registered(y, hm, offset=3 * slot, blocking=blocking)
        if not blocking:
            ttnn.synchronize_device(device)
        np.testing.assert_array_equal(host[3], np.maximum(x, 0))
        assert not host[2].any(), "the read wrote outside its slot"
    assert not hm.is_registered
    with pytest.raises(ttnn.InvalidArgumentError, match="no longer registered"):
        ttnn.copy_registered_to_device_tensor(hm, t)


def test_argument_rules(device):
    raw = ttnn.aligned_empty(3 * 4096, np.uint8)
    with pytest.raises(ttnn.InvalidArgumentError, match="4096-byte"):
        ttnn.register_host_memory(device, raw[8 : 8 + 4096])
    with pytest.raises(ttnn.InvalidArgumentError, match="multiple of 4096"):
        ttnn.register_host_memory(device, raw[: 4096 + 100])
    with pytest.raises(ttnn.InvalidArgumentError, match="C-contiguous"):
        ttnn.register_host_memory(device, raw.reshape(96, 128)[:, ::2])
    ro = raw[:4096]
    ro.flags.writeable = False
    with pytest.raises(ttnn.InvalidArgumentError, match="read-only"):
        ttnn.register_host_memory(device, ro)

    hm = ttnn.register_host_memory(device, raw)
    t = ttnn.allocate_tensor_on_device((16, 64), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, device)  # 4096 bytes
    with pytest.raises(ttnn.InvalidArgumentError, match="do not fit"):
        ttnn.copy_registered_to_device_tensor(hm, t, offset=2 * 4096 + 4)
    ttnn.copy_registered_to_device_tensor(hm, t, offset=2 * 4096)  # the last whole fit
    tiled = ttnn.allocate_tensor_on_device((32, 32), ttnn.float32, ttnn.TILE_LAYOUT, device)
    with pytest.raises(ttnn.InvalidArgumentError, match="tiled"):
        ttnn.copy_device_tensor_to_registered(tiled, hm)
    with pytest.raises(ttnn.InvalidArgumentError, match="host tensor"):
        ttnn.copy_device_tensor_to_registered(ttnn.from_numpy(rand(16, 64), ttnn.float32), hm)
    hm.unregister()
    hm.unregister()  # again: nothing to do
    with pytest.raises(ttnn.InvalidArgumentError, match="no longer registered"):
        ttnn.copy_device_tensor_to_registered(t, hm)


def test_unregister_waits_for_transfers_in_flight(open_device):
    slow = open_device(selector="emu:slow_us=200000")
    host = ttnn.aligned_empty((2, 1024), np.float32)
    host[0] = rand(1024, seed=3)
    host[1] = 0
    hm = ttnn.register_host_memory(slow, host)
    t = ttnn.allocate_tensor_on_device((1, 1024), ttnn.float32, ttnn.ROW_MAJOR_LAYOUT, slow, ttnn.L1_MEMORY_CONFIG)
    ttnn.copy_registered_to_device_tensor(hm, t, offset=0, blocking=False)
    ttnn.copy_device_tensor_to_registered(t, hm, offset=4096, blocking=False)
    hm.unregister()
    # Both transfers completed before unregister returned: the read's data is in place without a synchronize.
    np.testing.assert_array_equal(host[1], host[0])
