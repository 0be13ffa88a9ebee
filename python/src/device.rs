//! Devices, events, traces and synchronisation: `open_device` ... `release_trace`, with ttnn's argument names,
//! order and defaults.

use crate::errors::{IntoPy, invalid};
use crate::logging;
use crate::types::CoreCoord;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::time::Duration;
use ttdrv::DeviceParams;

/// Runs `f` without the GIL (so other Python threads run while the driver waits or copies), then hands any log
/// records the call produced to Python's `logging`.
#[inline]
pub fn released<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    let r = py.detach(f);
    logging::flush(py);
    r
}

/// An open device (`ttnn.Device`). Made by `ttdrv.open_device`; closed by `ttdrv.close_device`, by leaving a
/// `with` block, or when the last reference to it (including the references its tensors and events hold) goes.
/// Tensors and events of a closed device raise `ttdrv.ClosedError` when used.
#[pyclass(frozen, weakref, module = "ttdrv")]
pub struct Device {
    /// The driver's handle.
    pub dev: ttdrv::Device,
    /// The `device_id` it was opened with.
    pub device_id: u32,
    /// The selector it was opened with (`emu:...`, `vfio:...`).
    pub selector: String,
}

impl Device {
    /// Checks a command queue id from Python.
    pub fn queue(&self, cq_id: i64) -> PyResult<u16> {
        let n = self.dev.num_queues();
        u16::try_from(cq_id).ok().filter(|&q| q < n).ok_or_else(|| {
            invalid(format!(
                "cq_id={cq_id}: device {} was opened with {n} command queue(s), so cq_id is 0 to {}; open it with \
                 num_command_queues=2 to use a second queue",
                self.selector,
                n - 1
            ))
        })
    }
}

/// The selector `open_device` uses for `device_id` when no selector is given: `$TTDRV_DEVICE` (through the
/// driver's `auto`) for device 0; otherwise the `device_id`-th VFIO-bound ttdrv device `ttdrv list` shows, and the
/// emulated device when the host has none.
fn selector_for(device_id: u32) -> PyResult<String> {
    let from_env = std::env::var(ttdrv::transport::DEVICE_ENV).ok().filter(|s| !s.trim().is_empty());
    if let Some(s) = from_env {
        return Ok(s);
    }
    let bound: Vec<_> = ttdrv::transport::list_devices(std::path::Path::new("/sys"))
        .into_iter()
        .filter(|d| d.bound_to_vfio())
        .collect();
    if bound.is_empty() {
        return Ok("emu".into());
    }
    match bound.get(device_id as usize) {
        Some(d) => Ok(format!("vfio:{}", d.address)),
        None => Err(crate::errors::new_err(
            ttdrv::ErrorKind::NotFound,
            format!(
                "device_id={device_id}: this host has {} ttdrv device(s) bound to vfio-pci (ids 0 to {}); `ttdrv \
                 list` shows them",
                bound.len(),
                bound.len() - 1
            ),
        )),
    }
}

/// Opens a device; `ttdrv.open_device` (python/ttdrv/__init__.py) wraps this with ttnn's "already open" rule.
#[pyfunction]
#[pyo3(signature = (*, device_id = 0, l1_small_size = 0, trace_region_size = 0, num_command_queues = 1,
    selector = None, timeout = None, hugepages = true))]
#[allow(clippy::too_many_arguments)]
pub fn _open_device(
    py: Python<'_>,
    device_id: u32,
    l1_small_size: u32,
    trace_region_size: u64,
    num_command_queues: u16,
    selector: Option<String>,
    timeout: Option<f64>,
    hugepages: bool,
) -> PyResult<Device> {
    let selector = match selector {
        Some(s) => s,
        None => selector_for(device_id)?,
    };
    let mut p = DeviceParams {
        num_command_queues,
        trace_region_size,
        l1_small_size,
        // tt-metal's guide sizes the trace region by hand; with no size at all, trace buffers come from ordinary
        // DRAM as they are captured, so traces work without tuning.
        trace_buffers_on_demand: trace_region_size == 0,
        hugepages,
        ..DeviceParams::default()
    };
    if let Some(t) = timeout {
        if !(t > 0.0 && t.is_finite()) {
            return Err(invalid(format!("timeout={t}: give the wait timeout in seconds, above 0")));
        }
        p.timeout = Duration::from_secs_f64(t);
    }
    let sel = selector.clone();
    let dev = released(py, move || ttdrv::Device::open(&sel, &p)).py_err()?;
    Ok(Device { dev, device_id, selector })
}

/// Closes `device` (`ttnn.close_device`): waits for the work in flight (up to the device's timeout), then releases
/// it. Its tensors, events and traces raise `ttdrv.ClosedError` afterwards. Closing twice is harmless.
#[pyfunction]
#[pyo3(signature = (device))]
pub fn close_device(py: Python<'_>, device: &Bound<'_, Device>) -> PyResult<()> {
    let d = device.get();
    released(py, || d.dev.close()).py_err()
}

#[pymethods]
impl Device {
    /// The `device_id` it was opened with.
    fn id(&self) -> u32 {
        self.device_id
    }

    /// The selector it was opened with.
    #[getter]
    fn selector(&self) -> &str {
        &self.selector
    }

    /// Command queues it was opened with.
    #[getter]
    fn num_command_queues(&self) -> u16 {
        self.dev.num_queues()
    }

    /// The worker core grid, as `CoreCoord(x=columns, y=rows)` (ttnn's `compute_with_storage_grid_size()`).
    fn compute_with_storage_grid_size(&self) -> CoreCoord {
        let i = self.dev.info();
        CoreCoord { x: i.grid_x, y: i.grid_y }
    }

    /// The DRAM banks, as `CoreCoord(x=banks, y=1)` (ttnn's `dram_grid_size()`).
    fn dram_grid_size(&self) -> CoreCoord {
        CoreCoord { x: self.dev.info().dram_banks, y: 1 }
    }

    /// What the device reports (name, contract version, grid, memories, queues), as a dict.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = self.dev.info();
        let d = PyDict::new(py);
        d.set_item("name", &i.name)?;
        d.set_item("contract_version", (i.version_major, i.version_minor))?;
        d.set_item("num_queues", i.num_queues)?;
        d.set_item("grid", (i.grid_x, i.grid_y))?;
        d.set_item("dram_banks", i.dram_banks)?;
        d.set_item("dram_bank_size", i.bank_size)?;
        d.set_item("l1_size", i.l1_size)?;
        d.set_item("trace_region_size", self.dev.trace_region_bytes())?;
        Ok(d)
    }

    /// False once the device was closed.
    fn is_open(&self) -> bool {
        self.dev.check_usable().is_ok()
    }

    /// ttdrv always caches programs; kept so ttnn code that calls it runs unchanged.
    fn enable_program_cache(&self) {}

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(slf: &Bound<'_, Self>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        close_device(slf.py(), slf)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("Device(id={}, {})", self.device_id, self.dev.info().name)
    }
}

/// Waits until every command queue of `device` has finished all work enqueued so far, including delivering the
/// data of non-blocking reads (`ttnn.synchronize_device`). With `cq_id`, waits for that queue only. The GIL is
/// released while waiting.
#[pyfunction]
#[pyo3(signature = (device, cq_id = None, sub_device_ids = None))]
pub fn synchronize_device(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    cq_id: Option<i64>,
    sub_device_ids: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    no_sub_devices(sub_device_ids)?;
    let d = device.get();
    match cq_id {
        Some(q) => {
            let q = d.queue(q)?;
            released(py, || d.dev.finish(q)).py_err()
        }
        None => released(py, || d.dev.synchronize()).py_err(),
    }
}

/// ttdrv devices have no sub-devices: accepts None or an empty list.
fn no_sub_devices(ids: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    match ids {
        None => Ok(()),
        Some(v) if v.len().is_ok_and(|n| n == 0) => Ok(()),
        Some(_) => Err(invalid("sub_device_ids: ttdrv devices have no sub-devices; pass none (or an empty list)")),
    }
}

// ---- Traces ------------------------------------------------------------------------------------------------------

/// Starts capturing the ops enqueued on `cq_id` into a new trace and returns its id (`ttnn.begin_trace_capture`).
/// Until `end_trace_capture`, ops, `record_event` and `wait_for_event` on that queue are recorded, not run; host
/// transfers and blocking calls on it are refused. Every op captured must have run once before (the guide's
/// "compile" run). An event recorded inside the trace is recorded again by every replay (the latest replay is what
/// waits and synchronizes see) and may not be recorded elsewhere until the trace is released; a wait inside the trace
/// waits, at each replay, for the event's latest record.
#[pyfunction]
#[pyo3(signature = (device, *, cq_id = 0))]
pub fn begin_trace_capture(py: Python<'_>, device: &Bound<'_, Device>, cq_id: i64) -> PyResult<u32> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    released(py, || d.dev.begin_trace_capture(q)).py_err()
}

/// Ends the capture of trace `trace_id` on `cq_id` and stores the trace on the device (`ttnn.end_trace_capture`).
/// Device memory the trace uses that no live tensor holds stays reserved for the trace until `release_trace`.
#[pyfunction]
#[pyo3(signature = (device, trace_id, *, cq_id = 0))]
pub fn end_trace_capture(py: Python<'_>, device: &Bound<'_, Device>, trace_id: u32, cq_id: i64) -> PyResult<()> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    released(py, || d.dev.end_trace_capture(trace_id, q)).py_err()
}

/// Replays trace `trace_id` on `cq_id` (`ttnn.execute_trace`): one command, whatever the trace holds. With
/// `blocking=True` (ttnn's default) waits until the replay has finished, without the GIL; with `blocking=False`
/// returns at once, and later work on `cq_id` (reads of the trace's outputs) runs after it.
///
/// `bindings` (`{name or index: tensor}`, as `trace_rebind` takes) binds tensors for this replay only: the
/// rebinding, the replay and the return to the previous bindings are enqueued on `cq_id` in that order. `after`
/// orders that rebinding after replays still running on other queues, as for `trace_rebind`.
#[pyfunction]
#[pyo3(signature = (device, trace_id, *, cq_id = 0, blocking = true, bindings = None, after = None))]
pub fn execute_trace(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    trace_id: u32,
    cq_id: i64,
    blocking: bool,
    bindings: Option<&Bound<'_, PyDict>>,
    after: Option<Vec<Bound<'_, Event>>>,
) -> PyResult<()> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    if bindings.is_some() || after.is_some() {
        return crate::trace_patch::execute_trace_with(py, device, trace_id, q, blocking, bindings, after);
    }
    released(py, || d.dev.execute_trace(trace_id, q, blocking)).py_err()
}

/// Releases trace `trace_id` and the device memory it reserved (`ttnn.release_trace`).
#[pyfunction]
#[pyo3(signature = (device, trace_id))]
pub fn release_trace(py: Python<'_>, device: &Bound<'_, Device>, trace_id: u32) -> PyResult<()> {
    let d = device.get();
    released(py, || d.dev.release_trace(trace_id)).py_err()
}

// ---- Events ------------------------------------------------------------------------------------------------------

/// An event of a device (`ttnn.create_event`, or returned by `record_event(device, cq_id)`). Recording it again
/// re-arms it: waits refer to the most recent record issued before them.
#[pyclass(frozen, module = "ttdrv")]
pub struct Event {
    /// The driver's event.
    pub(crate) ev: ttdrv::Event,
    /// The device it belongs to.
    pub(crate) device: Py<Device>,
}

#[pymethods]
impl Event {
    /// Blocks, without the GIL, until the event's most recent record has completed (`ttnn.event_synchronize`).
    fn synchronize(&self, py: Python<'_>) -> PyResult<()> {
        released(py, || self.ev.synchronize()).py_err()
    }

    /// True once the event's most recent record has completed (non-blocking).
    fn query(&self, py: Python<'_>) -> PyResult<bool> {
        released(py, || self.ev.query()).py_err()
    }

    /// The device it belongs to.
    fn device(&self, py: Python<'_>) -> Py<Device> {
        self.device.clone_ref(py)
    }

    fn __repr__(&self) -> String {
        match self.ev.last_record() {
            Some((q, id)) => format!("Event(recorded on cq {q}, #{id})"),
            None => "Event(never recorded)".into(),
        }
    }
}

/// Creates an event on `device` (`ttnn.create_event`). Record it before anyone waits for it.
#[pyfunction]
#[pyo3(signature = (device))]
pub fn create_event(device: &Bound<'_, Device>) -> PyResult<Event> {
    let ev = device.get().dev.create_event();
    logging::flush(device.py());
    let ev = ev.py_err()?;
    Ok(Event { ev, device: device.clone().unbind() })
}

/// Records an event on a command queue: it completes when all work enqueued on that queue before it has finished,
/// and its writes are visible to every queue. Two forms, as ttnn has had both:
///
/// - `record_event(cq_id, event)` (the form of tt-metal's guide "Advanced Performance Optimizations for
///   Models"; also `record_event(cq_id=0, event=event)`): records `event`, returns None;
/// - `record_event(device, cq_id=0)` (ttnn's current form): records a new event and returns it.
#[pyfunction]
#[pyo3(signature = (*args, cq_id = None, event = None, device = None, sub_device_ids = None))]
pub fn record_event(
    py: Python<'_>,
    args: &Bound<'_, PyTuple>,
    cq_id: Option<i64>,
    event: Option<Bound<'_, Event>>,
    device: Option<Bound<'_, Device>>,
    sub_device_ids: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Event>> {
    let usage = "record_event takes (cq_id, event) or (device, cq_id=0)";
    let first = args.get_item(0).ok();
    let device = match (device, &first) {
        (Some(d), _) => Some(d),
        (None, Some(f)) => f.cast::<Device>().ok().cloned(),
        (None, None) => None,
    };
    if let Some(dev) = device {
        // record_event(device, cq_id=0, sub_device_ids=None) -> Event
        let rest = if first.as_ref().is_some_and(|f| f.is(&dev)) { 1 } else { 0 };
        if args.len() > rest + 2 || event.is_some() {
            return Err(invalid(usage));
        }
        let q = match (args.get_item(rest).ok(), cq_id) {
            (Some(_), Some(_)) => return Err(invalid(format!("{usage}: cq_id given twice"))),
            (Some(a), None) => a.extract::<i64>()?,
            (None, Some(q)) => q,
            (None, None) => 0,
        };
        match (args.get_item(rest + 1).ok(), sub_device_ids) {
            (Some(_), Some(_)) => return Err(invalid(format!("{usage}: sub_device_ids given twice"))),
            (Some(s), None) => no_sub_devices(Some(&s))?,
            (None, s) => no_sub_devices(s)?,
        }
        let d = dev.get();
        let q = d.queue(q)?;
        let ev = d.dev.create_event().py_err()?;
        released(py, || ev.record(q)).py_err()?;
        return Ok(Some(Event { ev, device: dev.unbind() }));
    }
    // record_event(cq_id, event, sub_device_ids=None) -> None
    if args.len() > 3 {
        return Err(invalid(usage));
    }
    let q = match (args.get_item(0).ok(), cq_id) {
        (Some(_), Some(_)) => return Err(invalid(format!("{usage}: cq_id given twice"))),
        (Some(a), None) => a.extract::<i64>()?,
        (None, Some(q)) => q,
        (None, None) => return Err(invalid(format!("{usage}: cq_id is missing"))),
    };
    let ev = match (args.get_item(1).ok(), event) {
        (Some(_), Some(_)) => return Err(invalid(format!("{usage}: event given twice"))),
        (Some(a), None) => a.cast_into::<Event>()?,
        (None, Some(e)) => e,
        (None, None) => return Err(invalid(format!("{usage}: event is missing"))),
    };
    match (args.get_item(2).ok(), sub_device_ids) {
        (Some(s), None) => no_sub_devices(Some(&s))?,
        (_, s) => no_sub_devices(s)?,
    }
    let e = ev.get();
    let q = e.device.get().queue(q)?;
    released(py, || e.ev.record(q)).py_err()?;
    Ok(None)
}

/// Makes command queue `cq_id` wait, on the device, until `event`'s most recent record has completed
/// (`ttnn.wait_for_event`). Returns at once; work enqueued on `cq_id` afterwards starts only after the event.
#[pyfunction]
#[pyo3(signature = (cq_id, event))]
pub fn wait_for_event(py: Python<'_>, cq_id: i64, event: &Bound<'_, Event>) -> PyResult<()> {
    let e = event.get();
    let d = e.device.get();
    let q = d.queue(cq_id)?;
    released(py, || d.dev.wait_for_event(q, &e.ev)).py_err()
}

/// Blocks, without the GIL, until `event`'s most recent record has completed (`ttnn.event_synchronize`).
#[pyfunction]
#[pyo3(signature = (event))]
pub fn event_synchronize(py: Python<'_>, event: &Bound<'_, Event>) -> PyResult<()> {
    event.get().synchronize(py)
}
