//! `ttdrv._ttdrv`: the Rust half of the `ttdrv` Python package, on the driver's Rust API (the `ttdrv` crate).
//!
//! It gives ttnn's names, argument names, order and defaults to everything tt-metal's guide "Advanced Performance
//! Optimizations for Models" uses — devices, tensors, memory configs, ops, traces, events — so the guide's Python
//! runs on ttdrv with only the import and the device opening changed. The pure-Python half (python/ttdrv/) adds
//! ttnn's Python-level helpers and the trace helper; docs/python.md describes the package.
//!
//! Conventions: every blocking wait and long copy runs without the GIL ([`device::released`]); driver errors
//! become the exception class of their kind ([`errors`]); the driver's log records go to Python's `logging`
//! ([`logging`]); objects hold what they need (a tensor holds its device and its buffer), so any collection order
//! is safe and a tensor used after its device was closed raises `ttdrv.ClosedError`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod device;
mod dlpack;
mod errors;
mod host;
mod logging;
mod model;
mod nn;
mod ops;
mod reads;
mod registered;
mod tensor;
mod timing;
mod trace_file;
mod trace_patch;
mod types;

use pyo3::prelude::*;

/// The extension module `ttdrv._ttdrv`; `import ttdrv` re-exports it with the pure-Python helpers.
#[pymodule]
fn _ttdrv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    errors::register(m)?;
    m.add("__version__", ttdrv::VERSION)?;
    for c in [
        m.py().get_type::<types::DataType>(),
        m.py().get_type::<types::Layout>(),
        m.py().get_type::<types::BufferType>(),
        m.py().get_type::<types::TensorMemoryLayout>(),
        m.py().get_type::<types::ShardOrientation>(),
    ] {
        m.add(c.name()?, c)?;
    }
    m.add_class::<types::CoreCoord>()?;
    m.add_class::<types::CoreRange>()?;
    m.add_class::<types::CoreRangeSet>()?;
    m.add_class::<types::ShardSpec>()?;
    m.add_class::<types::MemoryConfig>()?;
    m.add_class::<device::Device>()?;
    m.add_class::<device::Event>()?;
    m.add_class::<tensor::Tensor>()?;
    m.add_class::<model::Mlp>()?;
    m.add_class::<registered::HostMemory>()?;
    m.add_function(wrap_pyfunction!(device::_open_device, m)?)?;
    m.add_function(wrap_pyfunction!(device::close_device, m)?)?;
    m.add_function(wrap_pyfunction!(device::synchronize_device, m)?)?;
    m.add_function(wrap_pyfunction!(device::begin_trace_capture, m)?)?;
    m.add_function(wrap_pyfunction!(device::end_trace_capture, m)?)?;
    m.add_function(wrap_pyfunction!(device::execute_trace, m)?)?;
    m.add_function(wrap_pyfunction!(device::release_trace, m)?)?;
    m.add_function(wrap_pyfunction!(trace_file::trace_save, m)?)?;
    m.add_function(wrap_pyfunction!(trace_file::trace_load, m)?)?;
    m.add_function(wrap_pyfunction!(trace_file::trace_get_info, m)?)?;
    m.add_function(wrap_pyfunction!(trace_patch::trace_bindings, m)?)?;
    m.add_function(wrap_pyfunction!(trace_patch::trace_scalars, m)?)?;
    m.add_function(wrap_pyfunction!(trace_patch::trace_rebind, m)?)?;
    m.add_function(wrap_pyfunction!(trace_patch::trace_set_scalar, m)?)?;
    m.add_function(wrap_pyfunction!(trace_patch::trace_file_bindings, m)?)?;
    m.add_function(wrap_pyfunction!(trace_patch::trace_file_scalars, m)?)?;
    m.add_function(wrap_pyfunction!(device::create_event, m)?)?;
    m.add_function(wrap_pyfunction!(device::record_event, m)?)?;
    m.add_function(wrap_pyfunction!(device::wait_for_event, m)?)?;
    m.add_function(wrap_pyfunction!(device::event_synchronize, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::_host_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::allocate_tensor_on_device, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::copy_host_to_device_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::to_numpy, m)?)?;
    m.add_function(wrap_pyfunction!(tensor::deallocate, m)?)?;
    m.add_function(wrap_pyfunction!(registered::register_host_memory, m)?)?;
    m.add_function(wrap_pyfunction!(registered::copy_registered_to_device_tensor, m)?)?;
    m.add_function(wrap_pyfunction!(registered::copy_device_tensor_to_registered, m)?)?;
    m.add_function(wrap_pyfunction!(ops::matmul, m)?)?;
    m.add_function(wrap_pyfunction!(ops::add, m)?)?;
    m.add_function(wrap_pyfunction!(ops::sub, m)?)?;
    m.add_function(wrap_pyfunction!(ops::mul, m)?)?;
    m.add_function(wrap_pyfunction!(ops::relu, m)?)?;
    m.add_function(wrap_pyfunction!(ops::gelu, m)?)?;
    m.add_function(wrap_pyfunction!(ops::exp, m)?)?;
    m.add_function(wrap_pyfunction!(ops::fill, m)?)?;
    m.add_function(wrap_pyfunction!(ops::_full_on_device, m)?)?;
    m.add_function(wrap_pyfunction!(ops::typecast, m)?)?;
    m.add_function(wrap_pyfunction!(ops::to_memory_config, m)?)?;
    m.add_function(wrap_pyfunction!(ops::to_layout, m)?)?;
    m.add_function(wrap_pyfunction!(ops::reshard, m)?)?;
    nn::register(m)?;
    m.add_function(wrap_pyfunction!(timing::_rust_execute_trace_ns, m)?)?;
    m.add_function(wrap_pyfunction!(timing::_rust_add_ns, m)?)?;
    m.add_function(wrap_pyfunction!(timing::_rust_write_ns, m)?)?;
    Ok(())
}
