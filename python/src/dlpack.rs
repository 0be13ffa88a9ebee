//! DLPack export of host tensors (`numpy.from_dlpack(t)`, `torch.from_dlpack(t)`): the consumer gets the host
//! tensor's memory itself, no copy.
//!
//! Hand-written because the exchange is a handful of `#[repr(C)]` structs from the DLPack header (v0.8, the
//! `"dltensor"` capsule every consumer accepts) and a capsule; `pyo3-dlpack` would add a dependency for that. The
//! structs here are the header's, field for field.

use crate::host::HostStorage;
use crate::types::DataType;
use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{CStr, c_void};
use std::sync::Arc;

/// `DLDevice`.
#[repr(C)]
struct DlDevice {
    device_type: i32,
    device_id: i32,
}

/// `DLDataType`.
#[repr(C)]
struct DlDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

/// `DLTensor`.
#[repr(C)]
struct DlTensor {
    data: *mut c_void,
    device: DlDevice,
    ndim: i32,
    dtype: DlDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

/// `DLManagedTensor`.
#[repr(C)]
struct DlManagedTensor {
    dl_tensor: DlTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DlManagedTensor)>,
}

/// What a managed tensor keeps alive: the memory, and the shape and strides the DLTensor points into.
struct Context {
    _data: Arc<HostStorage>,
    shape: [i64; 4],
    strides: [i64; 4],
}

/// `kDLCPU`.
const DL_CPU: i32 = 1;
/// `kDLFloat`.
const DL_FLOAT: u8 = 2;
/// `kDLBfloat`.
const DL_BFLOAT: u8 = 4;
const CAPSULE: &CStr = c"dltensor";

/// The deleter the consumer calls when it is done (on any thread, with or without the GIL).
unsafe extern "C" fn deleter(m: *mut DlManagedTensor) {
    if m.is_null() {
        return;
    }
    // SAFETY: `m` and its `manager_ctx` were made by `capsule` from these Box types, and DLPack calls the deleter
    // exactly once.
    unsafe {
        drop(Box::from_raw((*m).manager_ctx as *mut Context));
        drop(Box::from_raw(m));
    }
}

/// The capsule's destructor: frees the tensor unless a consumer took it (and renamed the capsule).
unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with a live capsule; a capsule still named "dltensor" was never consumed, so its
    // pointer is our DlManagedTensor and we own it.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, CAPSULE.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, CAPSULE.as_ptr()) as *mut DlManagedTensor;
            deleter(m);
        }
    }
}

/// A `"dltensor"` capsule viewing `data` (dense, `dims` shaped, of `dtype`).
pub fn capsule(py: Python<'_>, data: Arc<HostStorage>, dims: &[u32], dtype: DataType) -> PyResult<Py<PyAny>> {
    let mut ctx = Box::new(Context { _data: data, shape: [0; 4], strides: [0; 4] });
    let nd = dims.len();
    let mut stride = 1i64;
    for i in (0..nd).rev() {
        ctx.shape[i] = dims[i] as i64;
        ctx.strides[i] = stride;
        stride *= dims[i] as i64;
    }
    let (code, bits) = match dtype {
        DataType::Float32 => (DL_FLOAT, 32),
        DataType::BFloat16 => (DL_BFLOAT, 16),
    };
    let data_ptr = ctx._data.ptr() as *mut c_void;
    let shape = ctx.shape.as_mut_ptr();
    let strides = ctx.strides.as_mut_ptr();
    let m = Box::new(DlManagedTensor {
        dl_tensor: DlTensor {
            data: data_ptr,
            device: DlDevice { device_type: DL_CPU, device_id: 0 },
            ndim: nd as i32,
            dtype: DlDataType { code, bits, lanes: 1 },
            shape,
            strides,
            byte_offset: 0,
        },
        manager_ctx: Box::into_raw(ctx) as *mut c_void,
        deleter: Some(deleter),
    });
    let m = Box::into_raw(m);
    // SAFETY: `m` is a valid DlManagedTensor whose pointers stay valid until its deleter runs (they point into
    // the boxed Context it owns); the capsule's destructor frees it if no consumer takes it.
    let cap = unsafe { ffi::PyCapsule_New(m as *mut c_void, CAPSULE.as_ptr(), Some(capsule_destructor)) };
    if cap.is_null() {
        // SAFETY: the capsule was not made, so `m` is still ours.
        unsafe { deleter(m) };
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `cap` is a new reference returned by PyCapsule_New.
    Ok(unsafe { Bound::from_owned_ptr(py, cap) }.unbind())
}
