//! The `ttdrv` command's subcommands that exercise a device: `demo` and `bench`.

pub mod args;
pub mod bench;
pub mod demo;
