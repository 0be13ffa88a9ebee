//! A small argument parser: `--name value`, `--name=value` and `--flag`, with errors that say what is accepted.

use std::collections::HashMap;

/// Parsed options of one subcommand.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    /// Parses `argv` given the options that take a value and the flags.
    pub fn parse(argv: &[String], valued: &[&str], flags: &[&str]) -> Result<Args, String> {
        let mut a = Args::default();
        let mut i = 0;
        while i < argv.len() {
            let arg = &argv[i];
            let Some(name) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}`"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            if valued.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => {
                        i += 1;
                        argv.get(i).cloned().ok_or_else(|| format!("--{name} needs a value"))?
                    }
                };
                a.values.insert(name.to_string(), v);
            } else if flags.contains(&name) && inline.is_none() {
                a.flags.push(name.to_string());
            } else {
                return Err(format!("unknown option `{arg}`"));
            }
            i += 1;
        }
        Ok(a)
    }

    /// The value of `--name`, if given.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `--name` parsed as `T`, or `default`.
    pub fn parse_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            Some(v) => v.parse().map_err(|_| format!("--{name} {v}: not a valid value")),
            None => Ok(default),
        }
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_flags() {
        let argv: Vec<String> = ["--out", "x", "--json", "--n=3"].iter().map(|s| s.to_string()).collect();
        let a = Args::parse(&argv, &["out", "n"], &["json"]).unwrap();
        assert_eq!(a.value("out"), Some("x"));
        assert!(a.flag("json"));
        assert_eq!(a.parse_or("n", 0u32).unwrap(), 3);
        assert!(Args::parse(&["--bogus".to_string()], &[], &[]).is_err());
        assert!(Args::parse(&["--out".to_string()], &["out"], &[]).is_err());
    }
}
