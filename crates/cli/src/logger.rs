//! The logger the command installs for the driver's `log` records: env_logger, filtered by `TTDRV_LOG`, writing
//! `ttdrv: warning: ...` lines to stderr.
//!
//! `TTDRV_LOG` takes `off` (also `0`, `quiet`, `none`), a level name (`error`, `warn`/`warning`, `info`, `debug`,
//! `trace`, any case) or env_logger filter directives such as `ttdrv::dma=debug,warn`. Unset or empty means `warn`.
//! A value that is none of these is reported (as a warning) and `warn` is used.

use log::{Level, LevelFilter};
use std::io::Write;

/// Environment variable that selects what the driver's diagnostics show.
pub const LOG_ENV: &str = "TTDRV_LOG";

/// What a `TTDRV_LOG` value asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogSpec {
    /// One level for every module.
    Level(LevelFilter),
    /// env_logger filter directives (`module=level,...`), already checked to parse.
    Filters(String),
}

/// The default when `TTDRV_LOG` is unset or empty: warnings and errors.
pub const DEFAULT_LEVEL: LevelFilter = LevelFilter::Warn;

/// Reads a `TTDRV_LOG` value; `Err` says why it is not one.
pub fn parse_spec(value: &str) -> Result<LogSpec, String> {
    let v = value.trim();
    let level = match v.to_ascii_lowercase().as_str() {
        "" => Some(DEFAULT_LEVEL),
        "off" | "0" | "quiet" | "none" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    };
    if let Some(l) = level {
        return Ok(LogSpec::Level(l));
    }
    let unknown = || {
        format!(
            "{LOG_ENV}={v} is neither a level (off, error, warn, info, debug, trace) nor filters such as \
             `ttdrv::dma=debug,warn`; using warn"
        )
    };
    // A lone word that is not a level is most likely a misspelt level: env_logger would read it as a module name
    // and silence everything else, so it is refused rather than obeyed.
    if !v.contains('=') && !v.contains(',') {
        return Err(unknown());
    }
    env_filter::Builder::new().try_parse(v).map_err(|e| format!("{} ({e})", unknown()))?;
    Ok(LogSpec::Filters(v.to_string()))
}

/// The word a record's level is printed with.
pub fn level_word(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One line of output for a record.
pub fn line(level: Level, args: &std::fmt::Arguments<'_>) -> String {
    format!("ttdrv: {}: {args}", level_word(level))
}

/// Installs the logger for this process (once; a second call does nothing).
pub fn install() {
    let value = std::env::var(LOG_ENV).unwrap_or_default();
    let (spec, problem) = match parse_spec(&value) {
        Ok(s) => (s, None),
        Err(msg) => (LogSpec::Level(DEFAULT_LEVEL), Some(msg)),
    };
    let mut b = env_logger::Builder::new();
    match &spec {
        LogSpec::Level(l) => b.filter_level(*l),
        LogSpec::Filters(f) => b.parse_filters(f),
    };
    b.target(env_logger::Target::Stderr).format(|buf, record| writeln!(buf, "{}", line(record.level(), record.args())));
    if b.try_init().is_ok()
        && let Some(msg) = problem
    {
        log::warn!("{msg}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_levels_aliases_and_filters() {
        assert_eq!(parse_spec(""), Ok(LogSpec::Level(LevelFilter::Warn)));
        for off in ["off", "0", "quiet", "OFF", " none "] {
            assert_eq!(parse_spec(off), Ok(LogSpec::Level(LevelFilter::Off)), "{off}");
        }
        assert_eq!(parse_spec("warn"), Ok(LogSpec::Level(LevelFilter::Warn)));
        assert_eq!(parse_spec("Warning"), Ok(LogSpec::Level(LevelFilter::Warn)));
        assert_eq!(parse_spec("debug"), Ok(LogSpec::Level(LevelFilter::Debug)));
        assert_eq!(parse_spec("TRACE"), Ok(LogSpec::Level(LevelFilter::Trace)));
        assert_eq!(parse_spec("error"), Ok(LogSpec::Level(LevelFilter::Error)));
        assert_eq!(parse_spec("ttdrv::dma=debug,warn"), Ok(LogSpec::Filters("ttdrv::dma=debug,warn".into())));
    }

    #[test]
    fn refuses_what_is_not_a_level() {
        let e = parse_spec("verbose").unwrap_err();
        assert!(e.contains("TTDRV_LOG=verbose") && e.contains("debug") && e.contains("using warn"), "{e}");
        assert!(parse_spec("ttdrv=loud").is_err());
    }

    #[test]
    fn lines_look_like_the_command_s_messages() {
        assert_eq!(line(Level::Warn, &format_args!("no hugepages")), "ttdrv: warning: no hugepages");
        assert_eq!(line(Level::Debug, &format_args!("wired 2 vectors")), "ttdrv: debug: wired 2 vectors");
    }
}
