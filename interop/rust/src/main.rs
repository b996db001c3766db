//! `runfold-serde`: the origin crate's `run.rs`, compiled as it is, speaking JSON lines.
//!
//! runfold promises that its JSON is byte for byte what serde writes for the same
//! `Event`/`Run`. This binary lets the Python tests ask the real serde instead of
//! trusting our reading of its rules:
//!
//! ```text
//! runfold-serde roundtrip-events   < events.jsonl   # each line: serde_json::from_str then to_string
//! runfold-serde roundtrip-runs     < runs.jsonl
//! runfold-serde roundtrip-values   < values.jsonl   # any JSON value (serde_json::Value)
//! runfold-serde generate      --seed N --count K    # K seeded events covering all 16 kinds
//! runfold-serde generate-runs --seed N --count K    # K seeded runs in all four statuses
//! ```
//!
//! A round-trip line that does not parse is answered with `ERROR: <serde's message>`
//! so that output line N always belongs to input line N.

// The origin file is referenced, not copied, so that the types compiled here are
// exactly the ones Rust agents use. The repository and `shared/` are siblings both
// on developer machines and in CI.
#[allow(dead_code)]
#[path = "../../../../shared/origin/run.rs"]
mod run;

mod generate;

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use serde::de::DeserializeOwned;
use serde::Serialize;

const USAGE: &str = "usage: runfold-serde roundtrip-events | roundtrip-runs | roundtrip-values \
                     | generate --seed N --count K | generate-runs --seed N --count K";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("roundtrip-events") => roundtrip::<run::Event>(),
        Some("roundtrip-runs") => roundtrip::<run::Run>(),
        Some("roundtrip-values") => roundtrip::<serde_json::Value>(),
        Some("generate") => seed_and_count(&args[1..])
            .and_then(|(seed, count)| write_lines(&generate::events(seed, count))),
        Some("generate-runs") => seed_and_count(&args[1..])
            .and_then(|(seed, count)| write_lines(&generate::runs(seed, count))),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("runfold-serde: {message}");
            ExitCode::from(2)
        }
    }
}

/// Parse `--seed N --count K` (either order, both required).
fn seed_and_count(args: &[String]) -> Result<(u64, usize), String> {
    let mut seed = None;
    let mut count = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--seed" => {
                seed = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--seed {value:?}: {e}"))?,
                )
            }
            "--count" => {
                count = Some(
                    value
                        .parse()
                        .map_err(|e| format!("--count {value:?}: {e}"))?,
                )
            }
            _ => return Err(format!("unknown option {flag:?}; {USAGE}")),
        }
    }
    match (seed, count) {
        (Some(seed), Some(count)) => Ok((seed, count)),
        _ => Err(format!("both --seed and --count are required; {USAGE}")),
    }
}

/// Read JSON lines on stdin and write each back exactly as serde_json writes the value.
fn roundtrip<T: DeserializeOwned + Serialize>() -> Result<(), String> {
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let answer = serde_json::from_str::<T>(&line)
            .and_then(|value| serde_json::to_string(&value))
            .unwrap_or_else(|e| format!("ERROR: {e}"));
        writeln!(out, "{answer}").map_err(|e| format!("writing stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing stdout: {e}"))
}

/// Write each value as one compact serde_json line.
fn write_lines<T: Serialize>(values: &[T]) -> Result<(), String> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for value in values {
        let line = serde_json::to_string(value).map_err(|e| format!("serializing: {e}"))?;
        writeln!(out, "{line}").map_err(|e| format!("writing stdout: {e}"))?;
    }
    out.flush().map_err(|e| format!("writing stdout: {e}"))
}
