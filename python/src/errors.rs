//! Exceptions: the one place where the driver's [`ErrorKind`] becomes a Python exception class.
//!
//! `ttdrv.Error` is the base of every error the driver reports; each [`ErrorKind`] has a subclass named in
//! [`CLASSES`], carrying the driver's message (which says what was wrong and what to do). Where a kind has an
//! obvious Python counterpart the class also derives from it (`InvalidArgumentError` is a `ValueError`,
//! `WaitTimeoutError` a `TimeoutError`, ...), so generic `except ValueError:` code keeps working.
//!
//! The classes are made at import time from [`CLASSES`] with Python's `type()`, because pyo3's
//! `create_exception!` takes a single base class and several need two.

use pyo3::exceptions::{PyException, PyMemoryError, PyNotImplementedError, PyTimeoutError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use ttdrv::ErrorKind;

/// One exception class: the kind it stands for, its name in `ttdrv`, an extra builtin base, and its docstring.
struct Class {
    kind: ErrorKind,
    name: &'static str,
    builtin: Option<fn(Python<'_>) -> Bound<'_, PyType>>,
    doc: &'static str,
}

fn value_error(py: Python<'_>) -> Bound<'_, PyType> {
    py.get_type::<PyValueError>()
}
fn timeout_error(py: Python<'_>) -> Bound<'_, PyType> {
    py.get_type::<PyTimeoutError>()
}
fn memory_error(py: Python<'_>) -> Bound<'_, PyType> {
    py.get_type::<PyMemoryError>()
}
fn not_implemented(py: Python<'_>) -> Bound<'_, PyType> {
    py.get_type::<PyNotImplementedError>()
}

/// Every exception class, one per [`ErrorKind`] (the C status codes of `include/ttdrv.h` map to the same kinds).
const CLASSES: &[Class] = &[
    Class {
        kind: ErrorKind::InvalidArgument,
        name: "InvalidArgumentError",
        builtin: Some(value_error),
        doc: "An argument is out of range or inconsistent (a shape, memory config, queue id, shard grid, ...).",
    },
    Class {
        kind: ErrorKind::InvalidHandle,
        name: "InvalidHandleError",
        builtin: None,
        doc: "A handle is stale or was never valid.",
    },
    Class {
        kind: ErrorKind::InvalidState,
        name: "InvalidStateError",
        builtin: None,
        doc: "The call is not allowed now: during trace capture, on a deallocated tensor, an event never recorded.",
    },
    Class { kind: ErrorKind::NotFound, name: "NotFoundError", builtin: None, doc: "No device matched." },
    Class {
        kind: ErrorKind::Unsupported,
        name: "UnsupportedError",
        builtin: Some(not_implemented),
        doc: "The device or this build lacks a feature.",
    },
    Class {
        kind: ErrorKind::OutOfDeviceMemory,
        name: "OutOfDeviceMemoryError",
        builtin: Some(memory_error),
        doc: "Device DRAM or L1 is exhausted; free tensors or release traces.",
    },
    Class {
        kind: ErrorKind::TraceRegion,
        name: "TraceRegionError",
        builtin: None,
        doc: "The trace region is too small for a trace (open the device with a larger trace_region_size).",
    },
    Class {
        kind: ErrorKind::ProgramNotCached,
        name: "ProgramNotCachedError",
        builtin: None,
        doc: "An op was captured in a trace before it ever ran: run the model once before begin_trace_capture.",
    },
    Class {
        kind: ErrorKind::HostMemory,
        name: "HostMemoryError",
        builtin: Some(memory_error),
        doc: "Host DMA memory (hugepages, locked memory) could not be set up.",
    },
    Class { kind: ErrorKind::Transport, name: "TransportError", builtin: None, doc: "The bus refused an operation." },
    Class {
        kind: ErrorKind::Timeout,
        name: "WaitTimeoutError",
        builtin: Some(timeout_error),
        doc: "A wait did not complete within the device's timeout; the message holds every queue's state.",
    },
    Class {
        kind: ErrorKind::DeviceFault,
        name: "DeviceFaultError",
        builtin: None,
        doc: "The device reported a fault and stopped; reset or close it.",
    },
    Class {
        kind: ErrorKind::Protocol,
        name: "ProtocolError",
        builtin: None,
        doc: "The device broke the hardware contract (docs/device-interface.md).",
    },
    Class {
        kind: ErrorKind::Forked,
        name: "ForkedError",
        builtin: None,
        doc: "The device was opened by the parent of this forked process; open it again in the child.",
    },
    Class {
        kind: ErrorKind::ContentsUndefined,
        name: "ContentsUndefinedError",
        builtin: None,
        doc: "A tensor's contents are undefined (a write to it stopped part-way, or a device reset erased it); write \
              it whole again before reading it.",
    },
    Class { kind: ErrorKind::Closed, name: "ClosedError", builtin: None, doc: "The device has been closed." },
];

/// `ttdrv.Error` and the class of each entry of [`CLASSES`], in the same order.
struct Classes {
    base: Py<PyType>,
    by_kind: Vec<Py<PyType>>,
}

static TYPES: PyOnceLock<Classes> = PyOnceLock::new();

fn make_class<'py>(
    py: Python<'py>,
    name: &str,
    bases: Bound<'py, PyTuple>,
    doc: &str,
    kind: Option<&str>,
) -> PyResult<Bound<'py, PyType>> {
    let ns = PyDict::new(py);
    ns.set_item("__doc__", doc)?;
    ns.set_item("__module__", "ttdrv")?;
    ns.set_item("kind", kind)?;
    let ty = py.get_type::<PyType>().call1((name, bases, ns))?;
    Ok(ty.cast_into::<PyType>()?)
}

fn classes(py: Python<'_>) -> PyResult<&Classes> {
    TYPES.get_or_try_init(py, || {
        let base = make_class(
            py,
            "Error",
            PyTuple::new(py, [py.get_type::<PyException>()])?,
            "Base class of every error ttdrv reports. `kind` names the driver's error kind (None on the base); the \
             message is the driver's: what was wrong and what to do.",
            None,
        )?;
        let mut by_kind = Vec::with_capacity(CLASSES.len());
        for c in CLASSES {
            let bases = match c.builtin {
                Some(b) => PyTuple::new(py, [base.clone(), b(py)])?,
                None => PyTuple::new(py, [base.clone()])?,
            };
            let kind = format!("{:?}", c.kind);
            by_kind.push(make_class(py, c.name, bases, c.doc, Some(&kind))?.unbind());
        }
        Ok(Classes { base: base.unbind(), by_kind })
    })
}

/// Adds `Error` and every subclass to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let c = classes(py)?;
    m.add("Error", c.base.bind(py))?;
    for (class, ty) in CLASSES.iter().zip(&c.by_kind) {
        m.add(class.name, ty.bind(py))?;
    }
    Ok(())
}

/// The exception class of an error kind; the base `ttdrv.Error` for a kind this build does not know yet.
fn class_of(py: Python<'_>, kind: ErrorKind) -> PyResult<Bound<'_, PyType>> {
    let c = classes(py)?;
    Ok(match CLASSES.iter().position(|k| k.kind == kind) {
        Some(i) => c.by_kind[i].bind(py).clone(),
        None => c.base.bind(py).clone(),
    })
}

/// A Python exception of `kind` with `message`.
pub fn new_err(kind: ErrorKind, message: impl Into<String>) -> PyErr {
    let message = message.into();
    Python::attach(|py| match class_of(py, kind) {
        Ok(ty) => PyErr::from_type(ty, message),
        Err(e) => e,
    })
}

/// The Python exception for a driver error: its kind's class with the driver's message.
pub fn to_py(e: ttdrv::Error) -> PyErr {
    new_err(e.kind(), e.to_string())
}

/// `?` on a driver result inside a pyfunction.
pub trait IntoPy<T> {
    /// Converts the error into the Python exception of its kind.
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for ttdrv::Result<T> {
    #[inline]
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// An `InvalidArgumentError` (also a `ValueError`).
pub fn invalid(message: impl Into<String>) -> PyErr {
    new_err(ErrorKind::InvalidArgument, message)
}

/// An `InvalidStateError`.
pub fn invalid_state(message: impl Into<String>) -> PyErr {
    new_err(ErrorKind::InvalidState, message)
}
