//! The `ttdrv` command: run the demo and benchmarks, list devices, check a host's setup.
//!
//! Arguments are parsed by clap (derive): unknown options and commands are errors with a usage hint (exit 2),
//! every command has `--help`, and `ttdrv completions SHELL` prints a completion script.

mod bench;
mod demo;
mod doctor;
mod list;
mod logger;
mod svg;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// Device selectors, for `ttdrv help devices` (the emulator's options follow them).
const DEVICES_HELP: &str = "\
device selectors (the --device option, and TTDRV_DEVICE, which overrides `auto`):
  auto                  a bound VFIO device with ttdrv's PCI identity if there is one, else the emulator
  vfio:DDDD:BB:DD.F     the device at that PCI address, bound to vfio-pci (see docs/host-setup.md)
  emu[:OPTIONS]         the emulated device";

/// Environment variables the command reads, shown under the top-level help.
const ENVIRONMENT_HELP: &str = "\
`ttdrv help devices` lists the device selectors and the emulator's options.

environment:
  TTDRV_LOG     driver diagnostics on stderr: off (or 0, quiet), error,
                warn (default), info, debug, trace, or filters such as
                `ttdrv::dma=debug,warn`
  TTDRV_DEVICE  the device the selector `auto` opens";

/// ttdrv: user-space driver for a Tensix-class AI accelerator
#[derive(Parser, Debug)]
#[command(
    name = "ttdrv",
    version,
    arg_required_else_help = true,
    disable_help_subcommand = true,
    after_help = ENVIRONMENT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an MLP on the emulated device and show what trace and two command queues buy
    #[command(long_about = demo::LONG_ABOUT, after_help = demo::AFTER_HELP)]
    Demo(demo::DemoArgs),
    /// Headline measurements beside their references (dispatch, trace, copies, events, two queues, idle CPU)
    #[command(long_about = bench::LONG_ABOUT)]
    Bench(bench::BenchArgs),
    /// Devices with ttdrv's PCI identity (driver, IOMMU group, NUMA node), plus the emulated device
    #[command(long_about = LIST_ABOUT)]
    List,
    /// Check this host's setup for VFIO (IOMMU, vfio-pci, groups, permissions, hugepages, memlock)
    #[command(long_about = DOCTOR_ABOUT)]
    Doctor,
    /// Print a shell completion script (e.g. `ttdrv completions bash > /etc/bash_completion.d/ttdrv`)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print this help, a command's help, or the device selectors (`ttdrv help devices`)
    Help {
        /// What to explain
        topic: Option<HelpTopic>,
    },
}

const LIST_ABOUT: &str = "\
The devices with ttdrv's PCI identity (1234:7454) and their driver, IOMMU group and NUMA node, and the emulated \
device, which is always available.";

const DOCTOR_ABOUT: &str = "\
Checks what a host needs to drive a ttdrv device through VFIO — IOMMU enabled, the vfio-pci module, /dev/vfio, each \
device's binding, IOMMU group viability and permissions, free hugepages per NUMA node, and the memlock limit — and \
prints a fix for each problem. Exits 0 when the host is ready, 1 otherwise.";

/// What `ttdrv help` can explain: every command, and the device selectors.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum HelpTopic {
    /// `ttdrv demo`
    Demo,
    /// `ttdrv bench`
    Bench,
    /// `ttdrv list`
    List,
    /// `ttdrv doctor`
    Doctor,
    /// `ttdrv completions`
    Completions,
    /// `ttdrv help`
    Help,
    /// Device selectors (`--device`, `TTDRV_DEVICE`) and the emulated device's options
    Devices,
}

/// Prints what `topic` names: exactly what `ttdrv CMD --help` prints, the device selectors, or (no topic) what
/// `ttdrv --help` prints.
fn help(topic: Option<HelpTopic>) -> std::io::Result<()> {
    if topic == Some(HelpTopic::Devices) {
        println!("{DEVICES_HELP}\n\n{}", ttdrv::transport::EMU_OPTIONS_HELP);
        return Ok(());
    }
    let name = topic.and_then(|t| t.to_possible_value()).map(|v| v.get_name().to_string());
    let argv: Vec<&str> = ["ttdrv"].into_iter().chain(name.as_deref()).chain(["--help"]).collect();
    // clap answers a help request with its help text as an "error" of kind DisplayHelp.
    match Cli::try_parse_from(argv) {
        Err(e) => e.print(),
        Ok(_) => Cli::command().print_long_help(),
    }
}

fn main() -> ExitCode {
    logger::install();
    let cli = Cli::parse();
    let code: u8 = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::List => match list::list(&mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ttdrv list: {e}");
                1
            }
        },
        Command::Doctor => {
            if doctor::doctor(std::path::Path::new("/sys"), &mut std::io::stdout()) {
                0
            } else {
                1
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ttdrv", &mut std::io::stdout());
            0
        }
        Command::Help { topic } => match help(topic) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ttdrv help: {e}");
                1
            }
        },
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_is_a_help_topic() {
        for sub in Cli::command().get_subcommands() {
            assert!(
                HelpTopic::from_str(sub.get_name(), false).is_ok(),
                "`ttdrv help {}` is not a help topic: add it to HelpTopic",
                sub.get_name()
            );
        }
        for t in HelpTopic::value_variants() {
            let name = t.to_possible_value().unwrap().get_name().to_string();
            assert!(
                name == "devices" || Cli::command().find_subcommand(&name).is_some(),
                "help topic `{name}` names no command"
            );
        }
    }
}
