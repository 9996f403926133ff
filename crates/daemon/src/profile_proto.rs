//! The Go pprof `profile.proto` messages (package `perftools.profiles`),
//! encoded with the workspace's prost, and the conversion of a pprof-rs
//! [`pprof::Report`] into them.
//!
//! pprof-rs ships its own codec only on an older prost (or on rust-protobuf
//! with a code generator at build time); the handful of messages a CPU
//! profile needs are declared here instead. Mappings are not written: the
//! addresses are already symbolised, as in pprof-rs's own encoding.

use std::collections::HashMap;
use std::time::SystemTime;

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Profile {
    /// What each `Sample.value` entry counts.
    #[prost(message, repeated, tag = "1")]
    pub(crate) sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub(crate) sample: Vec<Sample>,
    /// Program locations (one per distinct stack frame).
    #[prost(message, repeated, tag = "4")]
    pub(crate) location: Vec<Location>,
    /// Functions the locations are in.
    #[prost(message, repeated, tag = "5")]
    pub(crate) function: Vec<Function>,
    /// Every string of the profile; index 0 is the empty string.
    #[prost(string, repeated, tag = "6")]
    pub(crate) string_table: Vec<String>,
    /// When the collection started, in nanoseconds since the epoch.
    #[prost(int64, tag = "9")]
    pub(crate) time_nanos: i64,
    /// How long the collection ran, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub(crate) duration_nanos: i64,
    /// The kind of events between samples.
    #[prost(message, optional, tag = "11")]
    pub(crate) period_type: Option<ValueType>,
    /// The number of events (here nanoseconds) between samples.
    #[prost(int64, tag = "12")]
    pub(crate) period: i64,
}

/// `perftools.profiles.ValueType`: a type and unit, as string indices.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct ValueType {
    /// Index of the type name ("cpu", "samples").
    #[prost(int64, tag = "1")]
    pub(crate) r#type: i64,
    /// Index of the unit name ("nanoseconds", "count").
    #[prost(int64, tag = "2")]
    pub(crate) unit: i64,
}

/// `perftools.profiles.Sample`: one stack and its values.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    /// Location ids, the leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub(crate) location_id: Vec<u64>,
    /// One value per `Profile.sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub(crate) value: Vec<i64>,
    /// Labels (the thread).
    #[prost(message, repeated, tag = "3")]
    pub(crate) label: Vec<Label>,
}

/// `perftools.profiles.Label`: a string-valued label.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Label {
    /// Index of the key.
    #[prost(int64, tag = "1")]
    pub(crate) key: i64,
    /// Index of the value.
    #[prost(int64, tag = "2")]
    pub(crate) str: i64,
}

/// `perftools.profiles.Location`: a frame, with its inlined calls.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Location {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// The source lines; the last one is the caller the others were
    /// inlined into.
    #[prost(message, repeated, tag = "4")]
    pub(crate) line: Vec<Line>,
}

/// `perftools.profiles.Line`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Line {
    /// The function's id.
    #[prost(uint64, tag = "1")]
    pub(crate) function_id: u64,
    /// The line number (0 when unknown).
    #[prost(int64, tag = "2")]
    pub(crate) line: i64,
}

/// `perftools.profiles.Function`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct Function {
    /// Unique non-zero id.
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    /// Index of the demangled name.
    #[prost(int64, tag = "2")]
    pub(crate) name: i64,
    /// Index of the symbol (mangled) name.
    #[prost(int64, tag = "3")]
    pub(crate) system_name: i64,
    /// Index of the source file name.
    #[prost(int64, tag = "4")]
    pub(crate) filename: i64,
}

/// The string table being built: each string once, "" at index 0.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = i64::try_from(self.table.len()).unwrap_or(i64::MAX);
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds the CPU profile Go's handler would write for `report`: two
/// values per sample (samples/count and cpu/nanoseconds), a `thread` label,
/// one location per distinct frame.
pub(crate) fn from_report(report: &pprof::Report) -> Profile {
    let mut strings = Strings::new();
    let frequency = i64::from(report.timing.frequency.max(1));
    let period = 1_000_000_000 / frequency;
    let samples_type = ValueType {
        r#type: strings.get("samples"),
        unit: strings.get("count"),
    };
    let cpu_type = ValueType {
        r#type: strings.get("cpu"),
        unit: strings.get("nanoseconds"),
    };
    let thread_key = strings.get("thread");

    // Functions by (name, system name, file); locations by their lines.
    let mut functions: HashMap<(i64, i64, i64), u64> = HashMap::new();
    let mut function = Vec::new();
    let mut locations: HashMap<Vec<(u64, i64)>, u64> = HashMap::new();
    let mut location = Vec::new();
    let mut sample = Vec::with_capacity(report.data.len());
    for (frames, count) in &report.data {
        let mut location_id = Vec::with_capacity(frames.frames.len());
        for frame in &frames.frames {
            let lines: Vec<(u64, i64)> = frame
                .iter()
                .map(|symbol| {
                    let key = (
                        strings.get(&symbol.name()),
                        strings.get(&symbol.sys_name()),
                        strings.get(&symbol.filename()),
                    );
                    let next = u64::try_from(function.len()).unwrap_or(u64::MAX) + 1;
                    let id = *functions.entry(key).or_insert_with(|| {
                        function.push(Function {
                            id: next,
                            name: key.0,
                            system_name: key.1,
                            filename: key.2,
                        });
                        next
                    });
                    (id, i64::from(symbol.lineno()))
                })
                .collect();
            if lines.is_empty() {
                continue;
            }
            let next = u64::try_from(location.len()).unwrap_or(u64::MAX) + 1;
            let id = *locations.entry(lines).or_insert_with_key(|lines| {
                location.push(Location {
                    id: next,
                    line: lines
                        .iter()
                        .map(|&(function_id, line)| Line { function_id, line })
                        .collect(),
                });
                next
            });
            location_id.push(id);
        }
        let count = i64::try_from(*count).unwrap_or(i64::MAX);
        sample.push(Sample {
            location_id,
            value: vec![count, count.saturating_mul(period)],
            label: vec![Label {
                key: thread_key,
                str: strings.get(&frames.thread_name_or_id()),
            }],
        });
    }
    let time_nanos = report
        .timing
        .start_time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    Profile {
        sample_type: vec![samples_type, cpu_type],
        sample,
        location,
        function,
        string_table: strings.table,
        time_nanos,
        duration_nanos: i64::try_from(report.timing.duration.as_nanos()).unwrap_or(i64::MAX),
        period_type: Some(cpu_type),
        period,
    }
}
