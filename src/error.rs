//! The driver's error type. Every message says what was wrong and, where there is one, what to do.

use crate::dma::DmaError;
use crate::transport::TransportError;

/// Errors returned by ttdrv.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of range or inconsistent.
    #[error("{0}")]
    InvalidArgument(String),
    /// A handle is stale (freed, closed, reset) or was never valid.
    #[error("{0}")]
    InvalidHandle(String),
    /// The call is not allowed in the current state (capture active, event never recorded, ...).
    #[error("{0}")]
    InvalidState(String),
    /// No device matched the selector.
    #[error("{0}")]
    NotFound(String),
    /// The device lacks a feature the call needs.
    #[error("{0}")]
    Unsupported(String),
    /// Device memory (DRAM, L1, trace region) is exhausted.
    #[error("{0}")]
    OutOfDeviceMemory(String),
    /// The trace region cannot hold a trace.
    #[error("{0}")]
    TraceRegion(String),
    /// A program dispatched during capture has never run (it is not in the program cache).
    #[error("{0}")]
    ProgramNotCached(String),
    /// Host (DMA) memory could not be set up.
    #[error(transparent)]
    Dma(#[from] DmaError),
    /// The bus refused an operation.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A wait did not complete in time; the message holds the queue state.
    #[error("{0}")]
    Timeout(String),
    /// The device reported a fault; the message holds its registers.
    #[error("{0}")]
    DeviceFault(String),
    /// The device broke the contract.
    #[error("{0}")]
    Protocol(String),
    /// The device was opened in a parent process.
    #[error("{0}")]
    Forked(String),
    /// The device has been closed.
    #[error("{0}")]
    Closed(String),
}

/// What kind of failure an [`Error`] is: one value per C status code (`ttdrv_status` in `include/ttdrv.h` maps
/// these one to one), so callers that only need the class of failure (retry, reset, give up) can branch on it
/// whatever detail the error carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument is out of range or inconsistent.
    InvalidArgument,
    /// A handle is stale or was never valid.
    InvalidHandle,
    /// The call is not allowed in the current state.
    InvalidState,
    /// No device matched the selector.
    NotFound,
    /// The device or this build lacks a feature.
    Unsupported,
    /// Device memory is exhausted.
    OutOfDeviceMemory,
    /// The trace region is missing or too small.
    TraceRegion,
    /// A program dispatched during capture has never run.
    ProgramNotCached,
    /// Host DMA memory could not be set up.
    HostMemory,
    /// The bus refused an operation.
    Transport,
    /// A wait did not complete in time.
    Timeout,
    /// The device reported a fault.
    DeviceFault,
    /// The device broke the contract.
    Protocol,
    /// The device was opened in a parent process.
    Forked,
    /// The device has been closed.
    Closed,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::InvalidHandle(_) => ErrorKind::InvalidHandle,
            Error::InvalidState(_) => ErrorKind::InvalidState,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::OutOfDeviceMemory(_) => ErrorKind::OutOfDeviceMemory,
            Error::TraceRegion(_) => ErrorKind::TraceRegion,
            Error::ProgramNotCached(_) => ErrorKind::ProgramNotCached,
            Error::Dma(_) => ErrorKind::HostMemory,
            Error::Transport(_) => ErrorKind::Transport,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::DeviceFault(_) => ErrorKind::DeviceFault,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Forked(_) => ErrorKind::Forked,
            Error::Closed(_) => ErrorKind::Closed,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::queue::ProtocolError> for Error {
    fn from(e: crate::queue::ProtocolError) -> Error {
        Error::Protocol(e.to_string())
    }
}

/// Shorthand for an invalid-argument error.
pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::InvalidArgument(msg.into()))
}
