//! ttdrv: a user-space driver for a Tensix-class AI accelerator, with a stable C ABI.
//!
//! Layers, bottom to top (see `docs/architecture.md`):
//! - [`hw`]: the hardware contract of `docs/device-interface.md` — registers, records, kernel images;
//! - [`transport`]: how the device is reached — [`transport::emulated`] (the default) or VFIO;
//! - [`dma`]: hugepage DMA memory and IOVA allocation;
//! - [`queue`]: issue and completion rings;
//! - [`device`]: buffers, events, programs and traces on an open device;
//! - [`ffi`]: the C ABI (`include/ttdrv.h`).
//!
//! [`emu`] is the emulated device; it depends only on [`hw`] (and [`mmap`], the owned `mmap` every layer uses).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

/// cbindgen:ignore
pub mod cli;
/// cbindgen:ignore
pub mod device;
/// cbindgen:ignore
pub mod dma;
/// cbindgen:ignore
pub mod emu;
/// cbindgen:ignore
pub mod error;
pub mod ffi;
/// cbindgen:ignore
pub mod hw;
/// cbindgen:ignore
pub mod log;
/// cbindgen:ignore
pub mod mmap;
/// cbindgen:ignore
pub mod profile;
/// cbindgen:ignore
pub mod queue;
/// cbindgen:ignore
pub mod tools;
/// cbindgen:ignore
pub mod transport;

pub use device::{Buffer, BufferSpec, BufferType, Device, DeviceInfo, DeviceParams, Event, MemoryConfig, ShardSpec};
pub use error::{Error, Result};
pub use hw::kernel::{DType, Layout, ShardGrid};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
