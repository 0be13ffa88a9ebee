//! The `ttdrv` command: run the demo and benchmarks, list devices, check a host's setup.

mod args;
mod bench;
mod demo;
mod doctor;
mod list;
mod svg;

use std::process::ExitCode;

const HELP: &str = "\
ttdrv: user-space driver for a Tensix-class AI accelerator

usage: ttdrv <command> [options]

commands:
  demo      run the seed's model on the emulated device and show what trace and two queues buy
  bench     headline measurements beside their references (dispatch, trace, copies, events, two queues, idle CPU)
  list      devices with ttdrv's PCI identity (driver, IOMMU group, NUMA node), plus the emulated device
  doctor    check this host's setup for VFIO (IOMMU, vfio-pci, groups, permissions, hugepages, memlock)
  help      this text; `ttdrv help <command>` for a command, `ttdrv help devices` for device selectors

Every command takes --help.";

const DEVICES_HELP: &str = "\
device selectors (the --device option, and TTDRV_DEVICE, which overrides `auto`):
  auto                  a bound VFIO device with ttdrv's PCI identity if there is one, else the emulator
  vfio:DDDD:BB:DD.F     the device at that PCI address, bound to vfio-pci (see docs/host-setup.md)
  emu[:OPTIONS]         the emulated device";

const LIST_HELP: &str = "\
ttdrv list: the devices with ttdrv's PCI identity (1234:7454) and their driver, IOMMU group and NUMA node, and
the emulated device, which is always available.

usage: ttdrv list";

const DOCTOR_HELP: &str = "\
ttdrv doctor: checks what a host needs to drive a ttdrv device through VFIO — IOMMU enabled, the vfio-pci module,
/dev/vfio, each device's binding, IOMMU group viability and permissions, free hugepages per NUMA node, and the
memlock limit — and prints a fix for each problem. Exits 0 when the host is ready, 1 otherwise.

usage: ttdrv doctor";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match argv.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            println!("{HELP}");
            return ExitCode::from(2);
        }
    };
    let wants_help = rest.iter().any(|a| a == "--help" || a == "-h");
    let code = match cmd {
        "demo" if wants_help => {
            println!("{}", demo::HELP);
            0
        }
        "demo" => demo::run(rest),
        "bench" if wants_help => {
            println!("{}", bench::HELP);
            0
        }
        "bench" => bench::run(rest),
        "list" if wants_help => {
            println!("{LIST_HELP}");
            0
        }
        "list" => match list::list(&mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("ttdrv list: {e}");
                1
            }
        },
        "doctor" if wants_help => {
            println!("{DOCTOR_HELP}");
            0
        }
        "doctor" => {
            if doctor::doctor(std::path::Path::new("/sys"), &mut std::io::stdout()) {
                0
            } else {
                1
            }
        }
        "help" | "--help" | "-h" => {
            match rest.first().map(String::as_str) {
                Some("demo") => println!("{}", demo::HELP),
                Some("list") => println!("{LIST_HELP}"),
                Some("bench") => println!("{}", bench::HELP),
                Some("doctor") => println!("{DOCTOR_HELP}"),
                Some("devices") => println!("{DEVICES_HELP}\n\n{}", ttdrv::transport::EMU_OPTIONS_HELP),
                _ => println!("{HELP}"),
            }
            0
        }
        other => {
            eprintln!("ttdrv: unknown command `{other}`\n\n{HELP}");
            2
        }
    };
    ExitCode::from(code as u8)
}
