//! Checkpoints that let a batch job killed at its time limit resume where it stopped, and the
//! Slurm hook that saves one before the limit.
//!
//! ```ignore
//! let ckpt = Checkpoint::new(std::env::var("CHECKPOINT_DIR").unwrap_or("checkpoints".into()))?;
//! let mut state = ckpt.resume(&mut vs)?.unwrap_or_default();   // epoch 0 on a fresh start
//! stop_on_signals();                                             // SIGUSR1 (sbatch --signal) / SIGTERM
//! for epoch in state.epoch..epochs {
//!     ... train one epoch ...
//!     state.epoch = epoch + 1;
//!     ckpt.save(&vs, &state)?;
//!     if stop_requested() { break; }                             // saved; the job ends cleanly
//! }
//! ```

use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// The exit code of a program that stopped early with a checkpoint, to be resubmitted (the
/// sbatch script written by `tch-kernel export` resubmits itself on it).
pub use launch_env::job_script::RESUME_EXIT_CODE;

/// Makes SIGUSR1 and SIGTERM set a flag instead of killing the process, so that a training loop
/// can save a checkpoint and stop ([`stop_requested`]). Slurm sends SIGUSR1 before the time
/// limit with `#SBATCH --signal=USR1@120`, and SIGTERM at the limit (then SIGKILL after
/// `KillWait`, 30 s by default).
pub fn stop_on_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    for signal in [libc::SIGUSR1, libc::SIGTERM] {
        // SAFETY: installs a handler that only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// True once SIGUSR1 or SIGTERM arrived (after [`stop_on_signals`]).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Where training stands: epoch and step done, plus any numbers worth keeping (learning rate,
/// best accuracy, ...).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingState {
    pub epoch: usize,
    pub step: usize,
    pub values: Map<String, Value>,
}

impl TrainingState {
    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).and_then(Value::as_f64)
    }

    pub fn set(&mut self, key: &str, value: f64) {
        self.values.insert(key.to_owned(), json!(value));
    }

    #[cfg_attr(not(feature = "tch"), allow(dead_code))]
    fn to_json(&self) -> Value {
        json!({"epoch": self.epoch, "step": self.step, "values": Value::Object(self.values.clone())})
    }

    fn from_json(v: &Value) -> Option<TrainingState> {
        Some(TrainingState {
            epoch: v.get("epoch")?.as_u64()? as usize,
            step: v.get("step")?.as_u64()? as usize,
            values: v
                .get("values")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// A checkpoint directory: the model's weights (`model.safetensors`, from a `VarStore`) and
/// `state.json`. Both are written to temporary files and renamed, so a job killed while saving
/// leaves the previous checkpoint intact. Optimizer moment buffers (momentum, Adam's averages)
/// are not saved (tch cannot read them out); they restart from zero on resume.
pub struct Checkpoint {
    dir: PathBuf,
}

#[derive(Debug)]
pub struct CheckpointError(pub String);

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "checkpoint: {}", self.0)
    }
}

impl std::error::Error for CheckpointError {}

fn ctx(what: &str, path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError(format!("{what} {}: {e}", path.display()))
}

impl Checkpoint {
    pub fn new(dir: impl Into<PathBuf>) -> Result<Checkpoint, CheckpointError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| ctx("cannot create", &dir, e))?;
        Ok(Checkpoint { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn model_path(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Whether a complete checkpoint is there.
    pub fn exists(&self) -> bool {
        self.model_path().is_file() && self.state_path().is_file()
    }

    /// Saves the weights and the state (the state last: it marks the checkpoint complete).
    /// In a job of several ranks only rank 0 writes (the ranks hold the same weights); every
    /// rank [`resume`](Checkpoint::resume)s from it, whatever the world size.
    #[cfg(feature = "tch")]
    pub fn save(
        &self,
        vs: &tch::nn::VarStore,
        state: &TrainingState,
    ) -> Result<(), CheckpointError> {
        if !crate::rank::is_main_rank() {
            return Ok(());
        }
        let model = self.model_path();
        let tmp = self.dir.join("model.tmp.safetensors");
        vs.save(&tmp).map_err(|e| ctx("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &model).map_err(|e| ctx("cannot replace", &model, e))?;
        let state_path = self.state_path();
        let tmp = self.dir.join("state.tmp.json");
        std::fs::write(&tmp, state.to_json().to_string())
            .map_err(|e| ctx("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &state_path).map_err(|e| ctx("cannot replace", &state_path, e))
    }

    /// Loads the weights into `vs` and returns the saved state; `None` (and `vs` untouched)
    /// when there is no checkpoint yet.
    #[cfg(feature = "tch")]
    pub fn resume(
        &self,
        vs: &mut tch::nn::VarStore,
    ) -> Result<Option<TrainingState>, CheckpointError> {
        if !self.exists() {
            return Ok(None);
        }
        let state = self.state()?;
        let model = self.model_path();
        vs.load(&model).map_err(|e| ctx("cannot load", &model, e))?;
        Ok(Some(state))
    }

    /// The saved state alone.
    pub fn state(&self) -> Result<TrainingState, CheckpointError> {
        let path = self.state_path();
        let text = std::fs::read_to_string(&path).map_err(|e| ctx("cannot read", &path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| ctx("cannot parse", &path, e))?;
        TrainingState::from_json(&json)
            .ok_or_else(|| ctx("missing epoch or step in", &path, "bad state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_json() {
        let mut s = TrainingState {
            epoch: 3,
            step: 120,
            ..Default::default()
        };
        s.set("lr", 0.05);
        assert_eq!(TrainingState::from_json(&s.to_json()), Some(s.clone()));
        assert_eq!(s.get("lr"), Some(0.05));
    }

    #[test]
    fn no_checkpoint_until_both_files_exist() {
        let dir = std::env::temp_dir().join(format!("ckpt-test-{}", std::process::id()));
        let c = Checkpoint::new(&dir).unwrap();
        assert!(!c.exists());
        std::fs::write(dir.join("state.json"), r#"{"epoch":1,"step":2}"#).unwrap();
        assert!(!c.exists());
        assert_eq!(c.state().unwrap().step, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn signals_set_the_stop_flag() {
        stop_on_signals();
        assert!(!stop_requested());
        // SAFETY: raising a signal whose handler we installed above.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert!(stop_requested());
    }
}
