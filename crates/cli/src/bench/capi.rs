//! The C ABI as a C program uses it: handles from `ttdrv_*_new`/`_open`/`_allocate`, statuses checked after every
//! call, messages from `ttdrv_last_error`. The bench links ttdrv-ffi as a Rust library (as a C program links
//! `libttdrv.a`); the functions are not generic or `#[inline]`, so each call is a real call through the C calling
//! convention, with the argument checks, handle lookups and panic boundary a C caller pays.
//!
//! The owners here free their handle on drop; the hot loops of the measurements call the raw functions themselves
//! (see `dispatch.rs`), so nothing but the C call is timed.

use std::ffi::CStr;
use ttdrv_ffi::buffer::{
    TTDRV_BUFFER_DRAM, TTDRV_BUFFER_L1, TTDRV_LAYOUT_INTERLEAVED, ttdrv_buffer, ttdrv_buffer_allocate,
    ttdrv_buffer_free, ttdrv_memory_config, ttdrv_shard_spec, ttdrv_tensor_spec, ttdrv_tensor_spec_init,
};
use ttdrv_ffi::device::{
    ttdrv_device, ttdrv_device_close, ttdrv_device_finish, ttdrv_device_open, ttdrv_device_params,
    ttdrv_device_params_init,
};
use ttdrv_ffi::event::{ttdrv_event, ttdrv_event_free, ttdrv_event_new};
use ttdrv_ffi::program::{
    ttdrv_buffer_accessor, ttdrv_program, ttdrv_program_desc, ttdrv_program_desc_init, ttdrv_program_free,
    ttdrv_program_new,
};
use ttdrv_ffi::registered::{ttdrv_host_memory, ttdrv_host_memory_free, ttdrv_host_memory_register};
use ttdrv_ffi::{ttdrv_last_error, ttdrv_status, ttdrv_status_name};

/// `Ok(())`, or the status and the thread's last error message, naming the call.
pub fn ok(st: ttdrv_status, call: &str) -> Result<(), String> {
    if st == ttdrv_status::Ok { Ok(()) } else { Err(failure(st, call)) }
}

#[cold]
fn failure(st: ttdrv_status, call: &str) -> String {
    // SAFETY: both functions return static or thread-local NUL-terminated strings that stay valid until the next
    // ttdrv call on this thread; they are copied at once.
    let (name, msg) = unsafe {
        (
            CStr::from_ptr(ttdrv_status_name(st as u32)).to_string_lossy().into_owned(),
            CStr::from_ptr(ttdrv_last_error()).to_string_lossy().into_owned(),
        )
    };
    format!("{call}: {name}: {msg}")
}

/// An open device.
pub struct CDevice(*mut ttdrv_device);

impl CDevice {
    /// `ttdrv_device_open(selector, params)` with `queues` queues and a trace region of `trace_region` bytes.
    pub fn open(selector: &str, queues: u32, trace_region: u64) -> Result<CDevice, String> {
        let sel = std::ffi::CString::new(selector).map_err(|_| format!("selector {selector:?} contains a NUL"))?;
        let mut p = std::mem::MaybeUninit::<ttdrv_device_params>::uninit();
        // SAFETY: `p` is writable; init fills every field.
        ok(unsafe { ttdrv_device_params_init(p.as_mut_ptr()) }, "ttdrv_device_params_init")?;
        // SAFETY: initialised just above.
        let mut p = unsafe { p.assume_init() };
        p.num_command_queues = queues;
        p.trace_region_size = trace_region;
        let mut d = std::ptr::null_mut();
        // SAFETY: `sel` is NUL-terminated, `p` initialised, `d` writable.
        ok(unsafe { ttdrv_device_open(sel.as_ptr(), &p, &mut d) }, "ttdrv_device_open")?;
        Ok(CDevice(d))
    }

    /// The handle.
    pub fn raw(&self) -> *mut ttdrv_device {
        self.0
    }

    /// `ttdrv_device_finish(cq)`.
    pub fn finish(&self, cq: u16) -> Result<(), String> {
        ok(ttdrv_device_finish(self.0, cq), "ttdrv_device_finish")
    }
}

impl Drop for CDevice {
    fn drop(&mut self) {
        // SAFETY: the handle came from ttdrv_device_open and is closed once.
        let _ = unsafe { ttdrv_device_close(self.0) };
    }
}

/// A buffer.
pub struct CBuffer(*mut ttdrv_buffer);

impl CBuffer {
    /// An interleaved float32 buffer of `rows x cols` in L1 (`l1`) or DRAM.
    pub fn allocate(dev: &CDevice, rows: u32, cols: u32, l1: bool) -> Result<CBuffer, String> {
        let mut spec = std::mem::MaybeUninit::<ttdrv_tensor_spec>::uninit();
        // SAFETY: `spec` is writable; init fills every field.
        ok(unsafe { ttdrv_tensor_spec_init(spec.as_mut_ptr()) }, "ttdrv_tensor_spec_init")?;
        // SAFETY: initialised just above.
        let mut spec = unsafe { spec.assume_init() };
        spec.rows = rows;
        spec.cols = cols;
        spec.mem = memory(l1);
        let mut b = std::ptr::null_mut();
        // SAFETY: `spec` initialised, `b` writable.
        ok(unsafe { ttdrv_buffer_allocate(dev.raw(), &spec, &mut b) }, "ttdrv_buffer_allocate")?;
        Ok(CBuffer(b))
    }

    /// Takes ownership of a handle an op returned.
    pub fn adopt(b: *mut ttdrv_buffer) -> CBuffer {
        CBuffer(b)
    }

    /// The handle.
    pub fn raw(&self) -> *mut ttdrv_buffer {
        self.0
    }

    /// `ttdrv_buffer_accessor`: the 12 words a kernel's runtime arguments use to find the buffer.
    pub fn accessor(&self) -> Result<[u32; 12], String> {
        let mut w = [0u32; 12];
        // SAFETY: `w` holds 12 writable words.
        ok(unsafe { ttdrv_buffer_accessor(self.0, w.as_mut_ptr(), w.len()) }, "ttdrv_buffer_accessor")?;
        Ok(w)
    }
}

impl Drop for CBuffer {
    fn drop(&mut self) {
        // SAFETY: the handle came from ttdrv and is freed once.
        let _ = unsafe { ttdrv_buffer_free(self.0) };
    }
}

/// An interleaved memory configuration in L1 or DRAM.
pub fn memory(l1: bool) -> ttdrv_memory_config {
    ttdrv_memory_config {
        buffer_type: if l1 { TTDRV_BUFFER_L1 } else { TTDRV_BUFFER_DRAM },
        layout: TTDRV_LAYOUT_INTERLEAVED,
        shard: ttdrv_shard_spec::default(),
    }
}

/// A program handle.
pub struct CProgram(*mut ttdrv_program);

impl CProgram {
    /// The 1-core fill program of `ttdrv_testkit::fill_program`, created through the C ABI, and its runtime
    /// arguments for `buf` (block rows 0..1, columns 0..8, the accessor, the value 1.5).
    pub fn fill(dev: &CDevice, buf: &CBuffer) -> Result<(CProgram, Vec<u32>), String> {
        let mut desc = std::mem::MaybeUninit::<ttdrv_program_desc>::uninit();
        // SAFETY: `desc` is writable; init fills every field.
        ok(unsafe { ttdrv_program_desc_init(desc.as_mut_ptr()) }, "ttdrv_program_desc_init")?;
        // SAFETY: initialised just above.
        let mut desc = unsafe { desc.assume_init() };
        desc.kernel_name = c"ttdrv.fill".as_ptr();
        let rt_words = ttdrv::contract::kernel::BuiltinKernel::Fill.rt_words() as u32;
        desc.rt_words_per_core = rt_words;
        let mut p = std::ptr::null_mut();
        // SAFETY: `desc` initialised with a static kernel name and no arrays; `p` writable.
        ok(unsafe { ttdrv_program_new(dev.raw(), &desc, &mut p) }, "ttdrv_program_new")?;
        let prog = CProgram(p);
        let mut rt = ttdrv::contract::kernel::Block { r0: 0, r1: 1, c0: 0, c1: 8 }.to_words().to_vec();
        rt.extend_from_slice(&buf.accessor()?);
        rt.push(1.5f32.to_bits());
        if rt.len() != rt_words as usize {
            return Err(format!("the fill kernel takes {rt_words} runtime words, the bench built {}", rt.len()));
        }
        Ok((prog, rt))
    }

    /// The handle.
    pub fn raw(&self) -> *mut ttdrv_program {
        self.0
    }
}

impl Drop for CProgram {
    fn drop(&mut self) {
        // SAFETY: the handle came from ttdrv_program_new and is freed once.
        let _ = unsafe { ttdrv_program_free(self.0) };
    }
}

/// An event handle.
pub struct CEvent(*mut ttdrv_event);

impl CEvent {
    /// `ttdrv_event_new`.
    pub fn new(dev: &CDevice) -> Result<CEvent, String> {
        let mut e = std::ptr::null_mut();
        // SAFETY: `e` is writable.
        ok(unsafe { ttdrv_event_new(dev.raw(), &mut e) }, "ttdrv_event_new")?;
        Ok(CEvent(e))
    }

    /// The handle.
    pub fn raw(&self) -> *mut ttdrv_event {
        self.0
    }
}

impl Drop for CEvent {
    fn drop(&mut self) {
        // SAFETY: the handle came from ttdrv_event_new and is freed once.
        let _ = unsafe { ttdrv_event_free(self.0) };
    }
}

/// Host memory registered with a device through `ttdrv_host_memory_register`. Not freed on drop: unregistering
/// waits for the transfers that use the memory and can fail, and the memory must outlive a registration that
/// failed to end, so the owner calls [`CHostMemory::free`] and decides.
pub struct CHostMemory(*mut ttdrv_host_memory);

impl CHostMemory {
    /// `ttdrv_host_memory_register(dev, ptr, len)`.
    ///
    /// # Safety
    /// `ptr` must point to `len` bytes the caller owns and keeps allocated until [`CHostMemory::free`] has returned
    /// `Ok` (or for ever, if it never does).
    pub unsafe fn register(dev: &CDevice, ptr: *mut u8, len: usize) -> Result<CHostMemory, String> {
        let mut h = std::ptr::null_mut();
        // SAFETY: the caller keeps the memory allocated as this function's contract says; `h` is writable.
        ok(unsafe { ttdrv_host_memory_register(dev.raw(), ptr.cast(), len, &mut h) }, "ttdrv_host_memory_register")?;
        Ok(CHostMemory(h))
    }

    /// The handle.
    pub fn raw(&self) -> *mut ttdrv_host_memory {
        self.0
    }

    /// `ttdrv_host_memory_free`: unregisters the memory (waiting for the transfers that use it) and releases the
    /// handle. On an error the memory stays registered and must stay allocated.
    pub fn free(self) -> Result<(), String> {
        // SAFETY: the handle came from ttdrv_host_memory_register and `self` is consumed, so it is freed once.
        ok(unsafe { ttdrv_host_memory_free(self.0) }, "ttdrv_host_memory_free")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_status_and_the_message() {
        let e = CDevice::open("emu:nosuch=1", 1, 0).err().expect("an unknown option fails");
        assert!(e.starts_with("ttdrv_device_open: TTDRV_STATUS_INVALID_ARGUMENT: "), "{e}");
        assert!(e.contains("nosuch"), "{e}");
    }

    #[test]
    fn the_fill_program_runs_through_the_c_abi() {
        let dev = CDevice::open("emu", 1, 0).unwrap();
        let buf = CBuffer::allocate(&dev, 16, 32, true).unwrap();
        let (prog, rt) = CProgram::fill(&dev, &buf).unwrap();
        let bufs = [buf.raw()];
        // SAFETY: `rt` and `bufs` are live arrays of the given lengths.
        let st = unsafe {
            ttdrv_ffi::program::ttdrv_program_run(prog.raw(), 0, rt.as_ptr(), rt.len(), bufs.as_ptr(), bufs.len())
        };
        ok(st, "ttdrv_program_run").unwrap();
        dev.finish(0).unwrap();
    }
}
