//! ttdrv: a user-space driver for a Tensix-class AI accelerator — the Rust API.
//!
//! Layers, bottom to top (see `docs/architecture.md`); each sees only the ones below it:
//! - `ttdrv-contract` (re-exported as [`contract`]): the hardware contract of `docs/device-interface.md`;
//! - [`transport`]: how the device is reached — the emulated device (`ttdrv-emu`, the default) or VFIO;
//! - `dma`: hugepage DMA memory and IOVA allocation;
//! - `queue`: issue and completion rings;
//! - [`device`]: buffers, events, programs and traces on an open device — the API everything else uses.
//!
//! The C ABI (`ttdrv-ffi`), the `ttdrv` command (`ttdrv-cli`) and the Python package are built on this crate's
//! public API only.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod device;
mod dma;
pub mod error;
pub mod profile;
mod queue;
pub mod raw;
pub mod transport;

/// The hardware contract this driver speaks (the `ttdrv-contract` crate).
pub use ttdrv_contract as contract;

pub use device::patch::{ArgRole, ScalarKind, TraceBinding, TraceScalar};
pub use device::{
    Buffer, BufferSpec, BufferType, Contents, Device, DeviceInfo, DeviceParams, Event, HostRegistration, MemoryConfig,
    OwnedRead, ShardSpec,
};
pub use error::{Error, ErrorKind, FaultReport, RangeOccupant, Result, TraceProblem};
pub use ttdrv_contract::kernel::{DType, Layout, ShardGrid, TensorLayout};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
