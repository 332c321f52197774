//! A small `--flag value` parser: every flag must be known, every value must parse.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Flags given on the command line, checked against the known ones.
pub struct Args {
    values: BTreeMap<String, String>,
}

impl Args {
    /// Parses `--name value` pairs (and bare `--name` for the names in `switches`).
    pub fn parse(args: &[String], known: &[&str], switches: &[&str]) -> Result<Args, String> {
        let mut values = BTreeMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument '{a}'"));
            };
            let (name, inline) = match name.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (name, None),
            };
            if switches.contains(&name) {
                values.insert(name.to_string(), inline.unwrap_or_else(|| "true".into()));
                continue;
            }
            if !known.contains(&name) {
                return Err(format!("unknown flag --{name}"));
            }
            let v = match inline {
                Some(v) => v,
                None => it.next().cloned().ok_or_else(|| format!("--{name} needs a value"))?,
            };
            values.insert(name.to_string(), v);
        }
        Ok(Args { values })
    }

    /// The value of `--name` parsed as `T`, or `default`.
    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: cannot parse '{v}'")),
        }
    }

    /// The value of `--name`, if given.
    pub fn opt(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether the switch `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.values.get(name).is_some_and(|v| v != "false")
    }
}
