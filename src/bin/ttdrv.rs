//! The `ttdrv` command: run the demo and benchmarks, list devices, check a host's setup.

use std::process::ExitCode;

const HELP: &str = "\
ttdrv: user-space driver for a Tensix-class AI accelerator

usage: ttdrv <command> [options]

commands:
  demo      run the seed's model on the emulated device and show what trace and two queues buy
  help      this text; `ttdrv help <command>` for a command, `ttdrv help devices` for device selectors

Every command takes --help.";

const DEVICES_HELP: &str = "\
device selectors (the --device option, and TTDRV_DEVICE, which overrides `auto`):
  auto                  a bound VFIO device with ttdrv's PCI identity if there is one, else the emulator
  emu[:OPTIONS]         the emulated device";

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
            println!("{}", ttdrv::cli::demo::HELP);
            0
        }
        "demo" => ttdrv::cli::demo::run(rest),
        "help" | "--help" | "-h" => {
            match rest.first().map(String::as_str) {
                Some("demo") => println!("{}", ttdrv::cli::demo::HELP),
                Some("devices") => println!("{DEVICES_HELP}\n\n{}", ttdrv::emu::config::OPTIONS_HELP),
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
