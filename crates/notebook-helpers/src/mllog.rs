//! MLPerf-style logging: `:::MLLOG {json}` lines in the format of the `mlperf-logging` package
//! (`mlperf_logging.mllog`), so its parser and compliance checker read them.
//!
//! ```ignore
//! let log = MlLog::to_file("mllog.txt")?;
//! log.start(keys::INIT_START, Value::Null, json!({}));
//! log.event(keys::GLOBAL_BATCH_SIZE, 512, json!({}));
//! log.end(keys::EPOCH_STOP, Value::Null, json!({"epoch_num": 1}));
//! ```

use serde_json::{Map, Value, json};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// The official key names (`mlperf_logging.mllog.constants`) a training run uses.
pub mod keys {
    pub const SUBMISSION_BENCHMARK: &str = "submission_benchmark";
    pub const SUBMISSION_ORG: &str = "submission_org";
    pub const SUBMISSION_DIVISION: &str = "submission_division";
    pub const SUBMISSION_STATUS: &str = "submission_status";
    pub const SUBMISSION_PLATFORM: &str = "submission_platform";
    pub const CACHE_CLEAR: &str = "cache_clear";
    pub const INIT_START: &str = "init_start";
    pub const INIT_STOP: &str = "init_stop";
    pub const RUN_START: &str = "run_start";
    pub const RUN_STOP: &str = "run_stop";
    pub const BLOCK_START: &str = "block_start";
    pub const BLOCK_STOP: &str = "block_stop";
    pub const EPOCH_START: &str = "epoch_start";
    pub const EPOCH_STOP: &str = "epoch_stop";
    pub const EVAL_START: &str = "eval_start";
    pub const EVAL_STOP: &str = "eval_stop";
    pub const EVAL_ACCURACY: &str = "eval_accuracy";
    pub const TRAIN_SAMPLES: &str = "train_samples";
    pub const EVAL_SAMPLES: &str = "eval_samples";
    pub const GLOBAL_BATCH_SIZE: &str = "global_batch_size";
    pub const SEED: &str = "seed";
    pub const OPT_NAME: &str = "opt_name";
    pub const OPT_BASE_LR: &str = "opt_base_learning_rate";
    pub const OPT_WEIGHT_DECAY: &str = "opt_weight_decay";
    pub const GRADIENT_ACCUMULATION_STEPS: &str = "gradient_accumulation_steps";
    pub const EPOCH_NUM: &str = "epoch_num";
    pub const EPOCH_COUNT: &str = "epoch_count";
    pub const FIRST_EPOCH_NUM: &str = "first_epoch_num";
    pub const SAMPLES_COUNT: &str = "samples_count";
    pub const STATUS: &str = "status";
    pub const SUCCESS: &str = "success";
    pub const ABORTED: &str = "aborted";
}

/// Where MLLOG lines go: a file (appended), and optionally stdout as well.
pub struct MlLog {
    file: Option<Mutex<File>>,
    echo: bool,
    /// Only rank 0 of a job of several ranks logs, as the reference logger is used.
    main: bool,
}

impl MlLog {
    /// Appends to `path` (created if needed), as the reference logger's `filename` does.
    pub fn to_file(path: impl AsRef<Path>) -> std::io::Result<MlLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(MlLog {
            file: Some(Mutex::new(file)),
            echo: false,
            main: crate::rank::is_main_rank(),
        })
    }

    /// Lines on stdout only.
    pub fn to_stdout() -> MlLog {
        MlLog {
            file: None,
            echo: true,
            main: crate::rank::is_main_rank(),
        }
    }

    /// Also print each line on stdout (the run's log).
    pub fn echo(mut self, echo: bool) -> MlLog {
        self.echo = echo;
        self
    }

    /// A `POINT_IN_TIME` event.
    #[track_caller]
    pub fn event(&self, key: &str, value: impl Into<Value>, metadata: Value) {
        self.write(
            "POINT_IN_TIME",
            key,
            value.into(),
            metadata,
            std::panic::Location::caller(),
        );
    }

    /// An `INTERVAL_START` event (`init_start`, `run_start`, `epoch_start`, ...).
    #[track_caller]
    pub fn start(&self, key: &str, value: impl Into<Value>, metadata: Value) {
        self.write(
            "INTERVAL_START",
            key,
            value.into(),
            metadata,
            std::panic::Location::caller(),
        );
    }

    /// An `INTERVAL_END` event (`init_stop`, `run_stop`, `epoch_stop`, ...).
    #[track_caller]
    pub fn end(&self, key: &str, value: impl Into<Value>, metadata: Value) {
        self.write(
            "INTERVAL_END",
            key,
            value.into(),
            metadata,
            std::panic::Location::caller(),
        );
    }

    /// The five `submission_*` events every result file starts with.
    #[track_caller]
    pub fn submission_info(
        &self,
        benchmark: &str,
        org: &str,
        division: &str,
        status: &str,
        platform: &str,
    ) {
        let at = std::panic::Location::caller();
        for (key, value) in [
            (keys::SUBMISSION_BENCHMARK, benchmark),
            (keys::SUBMISSION_ORG, org),
            (keys::SUBMISSION_DIVISION, division),
            (keys::SUBMISSION_STATUS, status),
            (keys::SUBMISSION_PLATFORM, platform),
        ] {
            // The platform's metadata says how many processes trained (1 in a notebook).
            let metadata = if key == keys::SUBMISSION_PLATFORM {
                let world = launch_env::Launch::from_env().map_or(1, |l| l.world_size);
                json!({ "world_size": world })
            } else {
                json!({})
            };
            self.write("POINT_IN_TIME", key, Value::from(value), metadata, at);
        }
    }

    fn write(
        &self,
        event_type: &str,
        key: &str,
        value: Value,
        metadata: Value,
        at: &std::panic::Location<'_>,
    ) {
        if !self.main {
            return;
        }
        let line = format_line(event_type, key, value, metadata, at, now_ms());
        if let Some(file) = &self.file {
            let mut file = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A failed write must not stop training; the line still goes to stdout if echoing.
            let _ = writeln!(file, "{line}");
            let _ = file.flush();
        }
        if self.echo {
            println!("{line}");
        }
    }
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or_default()
}

/// One line, with the fields in the order the reference logger writes them.
fn format_line(
    event_type: &str,
    key: &str,
    value: Value,
    metadata: Value,
    at: &std::panic::Location<'_>,
    time_ms: f64,
) -> String {
    let mut meta = match metadata {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("value".into(), other);
            map
        }
    };
    meta.entry("file").or_insert_with(|| Value::from(at.file()));
    meta.entry("lineno")
        .or_insert_with(|| Value::from(at.line()));
    let mut record = Map::new();
    record.insert("namespace".into(), Value::from(""));
    record.insert("time_ms".into(), Value::from(time_ms.round() as u64));
    record.insert("event_type".into(), Value::from(event_type));
    record.insert("key".into(), Value::from(key));
    record.insert("value".into(), value);
    record.insert("metadata".into(), Value::Object(meta));
    format!(":::MLLOG {}", Value::Object(record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_the_reference_format() {
        let at = std::panic::Location::caller();
        let line = format_line(
            "POINT_IN_TIME",
            keys::EVAL_ACCURACY,
            Value::from(0.5),
            json!({"epoch_num": 3}),
            at,
            1234.4,
        );
        let json: Value = serde_json::from_str(line.strip_prefix(":::MLLOG ").unwrap()).unwrap();
        assert_eq!(json["namespace"], "");
        assert_eq!(json["time_ms"], 1234);
        assert_eq!(json["event_type"], "POINT_IN_TIME");
        assert_eq!(json["key"], "eval_accuracy");
        assert_eq!(json["value"], 0.5);
        assert_eq!(json["metadata"]["epoch_num"], 3);
        assert!(
            json["metadata"]["file"]
                .as_str()
                .unwrap()
                .ends_with("mllog.rs")
        );
        assert!(json["metadata"]["lineno"].as_u64().unwrap() > 0);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn writes_to_a_file() {
        let path = std::env::temp_dir().join(format!("mllog-test-{}.txt", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = MlLog::to_file(&path).unwrap();
        log.start(keys::RUN_START, Value::Null, json!({}));
        log.end(keys::RUN_STOP, Value::Null, json!({"status": "success"}));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().all(|l| l.starts_with(":::MLLOG {")));
        std::fs::remove_file(&path).unwrap();
    }
}
