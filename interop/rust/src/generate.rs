//! Seeded test vectors: events and runs built to hit every corner of serde's JSON.
//!
//! The corners are the ones a Python twin is most likely to get wrong: chrono's
//! fraction digits and year padding, ryu/zmij float text, string escapes, integer
//! widths, payload key order, `Option` as `null`. Everything is drawn from a tiny
//! hand-written RNG (SplitMix64) so the output depends on the seed alone, with no
//! extra crate whose algorithm could change under us.

use chrono::{DateTime, Utc};
use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::run::{Event, EventKind, Run, RunStatus};

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast and fixed forever.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant for test data.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi as i128 - lo as i128 + 1) as u128;
        (lo as i128 + (self.next_u64() as u128 % span) as i128) as i64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

/// Strings that stress JSON escaping and UTF-8: serde escapes `"`, `\` and
/// U+0000..U+001F only, and writes everything else (DEL, U+2028, emoji) raw.
const TRICKY_STRINGS: &[&str] = &[
    "",
    "plain",
    "node_42",
    "emoji 🚀🧠 family 👩\u{200D}👩\u{200D}👧 flag 🇺🇦",
    "CJK 漢字 かな カナ 한국어",
    "combining e\u{301} a\u{30A} n\u{303} (not precomposed)",
    "newline\nand\ttab",
    "controls \u{0}\u{1}\u{1f} end",
    "quote \" and backslash \\ and \\\" both",
    "slash / and </script>",
    "del \u{7f} nbsp \u{a0} soft\u{ad}hyphen",
    "line sep \u{2028} para sep \u{2029}",
    "bom \u{feff} zero width \u{200b}",
    "bell \u{7} backspace \u{8} formfeed \u{c} cr \r vt \u{b}",
    "astral 𝄞 𐍈 \u{10FFFF}",
    "rtl مرحبا עברית",
    "replacement \u{FFFD} nonchar \u{FFFE}",
    "json-looking {\"a\":[1,2]}",
    "   spaces   ",
];

/// Characters random strings are built from (each class escapes differently).
const CHAR_POOL: &[char] = &[
    'a',
    'Z',
    '0',
    ' ',
    '_',
    '-',
    '/',
    '"',
    '\\',
    '\n',
    '\t',
    '\r',
    '\u{0}',
    '\u{1}',
    '\u{8}',
    '\u{c}',
    '\u{1f}',
    '\u{7f}',
    '\u{80}',
    'é',
    'ß',
    'ø',
    '漢',
    '字',
    '🚀',
    '😀',
    '\u{301}',
    '\u{200D}',
    '\u{2028}',
    '\u{FEFF}',
    '\u{10FFFF}',
    '𝄞',
];

/// Floats whose shortest text differs between Python's `repr` and ryu/zmij.
const FLOATS: &[f64] = &[
    1.0,
    0.1,
    1e16,
    1e-7,
    1.5e300,
    5e-324,
    -0.0,
    0.0,
    123456789.123,
    1e15,
    1e21,
    0.00001,
    0.0001,
    1e-5,
    9007199254740993.0,
    1.7976931348623157e308,
    2.2250738585072014e-308,
    -2.5,
    100.0,
    1e22,
    1e23,
    123e-20,
    0.3,
    2.0 / 3.0,
    12345678901234567.0,
];

/// Integers at the edges of what serde_json keeps exact (u64 / i64).
const INTEGERS: &[i128] = &[
    0,
    1,
    -1,
    42,
    9_007_199_254_740_993,
    -9_007_199_254_740_993,
    u32::MAX as i128,
    i64::MAX as i128,
    i64::MIN as i128,
    u64::MAX as i128,
];

/// Object keys in deliberately non-sorted order (serde's `preserve_order` keeps them).
const KEYS: &[&str] = &[
    "zeta", "alpha", "Mid", "_under", "10", "2", "", "ключ", "鍵", "🔑", "a\"b", "tab\tkey",
    "nested", "list", "z", "A",
];

pub fn tricky_string(rng: &mut Rng) -> String {
    if rng.chance(60) {
        rng.pick(TRICKY_STRINGS).to_string()
    } else {
        let len = rng.below(12) as usize;
        (0..len).map(|_| *rng.pick(CHAR_POOL)).collect()
    }
}

fn float(rng: &mut Rng) -> f64 {
    match rng.below(4) {
        0 | 1 => *rng.pick(FLOATS),
        // Arbitrary bit patterns: subnormals, huge exponents, 17-digit mantissas.
        2 => loop {
            let value = f64::from_bits(rng.next_u64());
            if value.is_finite() {
                break value;
            }
        },
        // "Human" decimals like 12.34 or -0.005.
        _ => {
            let mantissa = rng.range_i64(-1_000_000, 1_000_000) as f64;
            mantissa / 10f64.powi(rng.below(8) as i32)
        }
    }
}

fn integer(rng: &mut Rng) -> Value {
    let value = if rng.chance(50) {
        *rng.pick(INTEGERS)
    } else {
        rng.range_i64(-100_000, 100_000) as i128
    };
    if value < 0 {
        Value::from(value as i64)
    } else {
        Value::from(value as u64)
    }
}

/// A JSON value, nested at most `depth` levels.
pub fn value(rng: &mut Rng, depth: u32) -> Value {
    let kinds = if depth == 0 { 5 } else { 7 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => integer(rng),
        3 => Number::from_f64(float(rng)).map_or(Value::Null, Value::Number),
        4 => Value::String(tricky_string(rng)),
        5 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object(object(rng, depth - 1)),
    }
}

/// An object whose keys come out in insertion order, which is rarely sorted order.
pub fn object(rng: &mut Rng, depth: u32) -> Map<String, Value> {
    let mut map = Map::new();
    for _ in 0..rng.below(6) {
        let key = if rng.chance(80) {
            rng.pick(KEYS).to_string()
        } else {
            tricky_string(rng)
        };
        // A repeated key keeps its first position and the new value, as serde does.
        map.insert(key, value(rng, depth));
    }
    map
}

/// A payload: usually an object, sometimes any JSON value at all (Rust allows it).
fn payload(rng: &mut Rng) -> Value {
    if rng.chance(85) {
        Value::Object(object(rng, 3))
    } else {
        value(rng, 2)
    }
}

const SECONDS_YEAR_1: i64 = -62_135_596_800; // 0001-01-01T00:00:00Z
const SECONDS_YEAR_1000: i64 = -30_610_224_000; // 1000-01-01T00:00:00Z
const SECONDS_YEAR_1900: i64 = -2_208_988_800; // 1900-01-01T00:00:00Z
const SECONDS_YEAR_2020: i64 = 1_577_836_800; // 2020-01-01T00:00:00Z
const SECONDS_YEAR_2030: i64 = 1_893_456_000; // 2030-01-01T00:00:00Z
const SECONDS_YEAR_9999: i64 = 253_370_764_800; // 9999-01-01T00:00:00Z
const SECONDS_MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// A UTC instant in years 1..=9999 (what Python's datetime can also name), never a
/// leap second, with a fraction of 0, 3, 6 or 9 significant digits.
pub fn timestamp(rng: &mut Rng) -> DateTime<Utc> {
    let seconds = match rng.below(8) {
        0..=2 => rng.range_i64(SECONDS_YEAR_2020, SECONDS_YEAR_2030),
        3 => rng.range_i64(SECONDS_YEAR_1900, -1),
        4 => rng.range_i64(SECONDS_YEAR_9999, SECONDS_MAX),
        5 => rng.range_i64(SECONDS_YEAR_1, SECONDS_YEAR_1000 - 1),
        6 => *rng.pick(&[0, -1, 1, SECONDS_YEAR_1, SECONDS_MAX, SECONDS_YEAR_1000]),
        _ => rng.range_i64(SECONDS_YEAR_1, SECONDS_MAX),
    };
    // The last digit of each fraction class is forced non-zero, so a "µs" instant
    // really needs 6 digits and a "ns" one 9.
    let nanos = match rng.below(4) {
        0 => 0,
        1 => (rng.below(1000) as u32 | 1) * 1_000_000,
        2 => (rng.below(1_000_000) as u32 | 1) * 1_000,
        _ => rng.below(1_000_000_000) as u32 | 1,
    };
    DateTime::from_timestamp(seconds, nanos).expect("seconds are within chrono's range")
}

fn u32_field(rng: &mut Rng) -> u32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, u32::MAX]),
        _ => rng.below(1000) as u32,
    }
}

fn u64_field(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, u64::MAX, 9_007_199_254_740_993, i64::MAX as u64 + 1]),
        _ => rng.below(600_000),
    }
}

fn keys_changed(rng: &mut Rng) -> Vec<String> {
    (0..rng.below(4)).map(|_| tricky_string(rng)).collect()
}

/// The variant with the given index (0..16, declaration order), fields drawn at random.
fn kind(rng: &mut Rng, index: u64) -> EventKind {
    match index {
        0 => EventKind::GraphStarted,
        1 => EventKind::GraphCompleted {
            iterations: u32_field(rng),
            duration_ms: u64_field(rng),
        },
        2 => EventKind::GraphFailed {
            error: tricky_string(rng),
        },
        3 => EventKind::NodeEntered {
            node_id: tricky_string(rng),
            iteration: u32_field(rng),
        },
        4 => EventKind::NodeExited {
            node_id: tricky_string(rng),
            next_node: if rng.chance(50) {
                Some(tricky_string(rng))
            } else {
                None
            },
            duration_ms: u64_field(rng),
        },
        5 => EventKind::NodeFailed {
            node_id: tricky_string(rng),
            error: tricky_string(rng),
        },
        6 => EventKind::ToolCalled {
            tool_name: tricky_string(rng),
        },
        7 => EventKind::ToolReturned {
            tool_name: tricky_string(rng),
        },
        8 => EventKind::ToolFailed {
            tool_name: tricky_string(rng),
        },
        9 => EventKind::CheckpointSaved {
            checkpoint_id: tricky_string(rng),
            node_id: tricky_string(rng),
        },
        10 => EventKind::CheckpointRestored {
            checkpoint_id: tricky_string(rng),
            node_id: tricky_string(rng),
        },
        11 => EventKind::CheckpointDeleted {
            checkpoint_id: tricky_string(rng),
        },
        12 => EventKind::StateUpdated {
            node_id: tricky_string(rng),
            keys_changed: keys_changed(rng),
        },
        13 => EventKind::MessageAdded {
            role: tricky_string(rng),
            content_length: u64_field(rng) as usize,
        },
        14 => EventKind::GraphInterrupted {
            reason: tricky_string(rng),
            node_id: tricky_string(rng),
        },
        _ => EventKind::NodeRetrying {
            node_id: tricky_string(rng),
            attempt: u32_field(rng),
            delay_ms: u64_field(rng),
        },
    }
}

/// `count` events over a handful of runs; event `i` has variant `i % 16`, so every
/// variant appears `count / 16` times or more.
pub fn events(seed: u64, count: usize) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let runs: Vec<Uuid> = (0..count.div_ceil(20).max(1)).map(|_| rng.uuid()).collect();
    let mut next_seq = vec![1u64; runs.len()];
    (0..count)
        .map(|i| {
            let run = rng.below(runs.len() as u64) as usize;
            let seq = if rng.chance(5) {
                *rng.pick(&[0, u64::MAX])
            } else {
                next_seq[run]
            };
            next_seq[run] += 1;
            Event {
                run_id: runs[run],
                seq,
                timestamp: timestamp(&mut rng),
                kind: kind(&mut rng, i as u64 % 16),
                payload: payload(&mut rng),
            }
        })
        .collect()
}

fn digest(rng: &mut Rng) -> String {
    if rng.chance(80) {
        format!(
            "sha256:{:016x}{:016x}{:016x}{:016x}",
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64(),
            rng.next_u64()
        )
    } else {
        tricky_string(rng)
    }
}

/// `count` runs cycling through the four statuses, with and without the optional fields.
pub fn runs(seed: u64, count: usize) -> Vec<Run> {
    let mut rng = Rng::new(seed);
    let statuses = [
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];
    (0..count)
        .map(|i| {
            let status = statuses[i % 4];
            // Each optional field is present or absent independently of the status,
            // since a folded run may lack them for any status (e.g. RUNNING with outputs
            // is odd but representable, and serde must not care).
            let optional = (i / 4) % 8;
            Run {
                run_id: rng.uuid(),
                agent_spec_digest: digest(&mut rng),
                git_sha: if rng.chance(80) {
                    format!(
                        "{:016x}{:016x}{:08x}",
                        rng.next_u64(),
                        rng.next_u64(),
                        rng.next_u64() as u32
                    )
                } else {
                    tricky_string(&mut rng)
                },
                started_at: timestamp(&mut rng),
                finished_at: if optional & 1 == 1 {
                    Some(timestamp(&mut rng))
                } else {
                    None
                },
                status,
                inputs: payload(&mut rng),
                outputs: if optional & 2 == 2 {
                    Some(payload(&mut rng))
                } else {
                    None
                },
                final_state_digest: if optional & 4 == 4 {
                    Some(digest(&mut rng))
                } else {
                    None
                },
            }
        })
        .collect()
}
