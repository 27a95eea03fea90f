//! Slurm jobs from a cell, as submitit does for Python: [`submit`] exports a notebook with
//! `tch-kernel export`, builds it, and `sbatch`es it; the [`Job`] it returns shows its status
//! (pending / running on NODE / completed, elapsed) and the tail of its log, updated in place
//! while [`Job::wait`] runs.
//!
//! ```ignore
//! let job = submit(Submit::notebook("02-first-classifier.ipynb").gres("gpu:1").time("00:30:00"))?;
//! job.wait()?;                 // live status line and log tail; the stop button stops waiting
//! let log = job.result()?;     // the log, or an error naming how the job ended
//! ```

use crate::display::html_escape;
use crate::display::{DisplayHandle, MimeBundle, RichDisplay};
use slurm_client::{JobId, JobInfo, JobState, SlurmError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use child_protocol::env::KERNEL_ONLY as KERNEL_ONLY_ENV;

/// `command` without the kernel's own environment variables, as if started outside the
/// kernel: a program (a build, a script that checks for a kernel) started from a cell then does
/// not take the evaluation process's variables for its own. `submit` builds and submits so.
pub fn outside_the_kernel(command: &mut std::process::Command) -> &mut std::process::Command {
    for name in KERNEL_ONLY_ENV {
        command.env_remove(name);
    }
    command
}

/// How often [`Job::wait`] asks Slurm (`scontrol`) about the job.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Log lines a job's display shows.
const TAIL_LINES: usize = 8;

/// What to submit and how: the `sbatch` options of `tch-kernel export`, plus a constraint and
/// environment for the job.
#[derive(Clone, Debug, Default)]
pub struct Submit {
    notebook: Option<PathBuf>,
    dir: Option<PathBuf>,
    export_args: Vec<String>,
    sbatch_args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Submit {
    /// The notebook this kernel runs (JupyterLab tells the kernel its path); save it first.
    pub fn this_notebook() -> Submit {
        Submit::default()
    }

    /// A named notebook (a path relative to the kernel's directory, usually the notebook's).
    pub fn notebook(path: impl Into<PathBuf>) -> Submit {
        Submit {
            notebook: Some(path.into()),
            ..Submit::default()
        }
    }

    fn export_arg(mut self, flag: &str, value: impl ToString) -> Submit {
        self.export_args.push(flag.to_owned());
        self.export_args.push(value.to_string());
        self
    }

    pub fn partition(self, partition: &str) -> Submit {
        self.export_arg("--partition", partition)
    }
    /// E.g. `gpu:1` or `gpu:a100:1`.
    pub fn gres(self, gres: &str) -> Submit {
        self.export_arg("--gres", gres)
    }
    /// Nodes for a job of several ranks (data-parallel training with `Distributed`).
    pub fn nodes(self, nodes: u32) -> Submit {
        self.export_arg("--nodes", nodes)
    }
    /// Ranks per node (`srun` starts them): e.g. one per GPU.
    pub fn ntasks_per_node(self, tasks: u32) -> Submit {
        self.export_arg("--ntasks-per-node", tasks)
    }
    /// `HH:MM:SS` or minutes.
    pub fn time(self, time: &str) -> Submit {
        self.export_arg("--time", time)
    }
    pub fn cpus_per_task(self, cpus: u32) -> Submit {
        self.export_arg("--cpus-per-task", cpus)
    }
    /// E.g. `32G`.
    pub fn mem(self, mem: &str) -> Submit {
        self.export_arg("--mem", mem)
    }
    pub fn account(self, account: &str) -> Submit {
        self.export_arg("--account", account)
    }
    /// Seconds before the time limit at which the program gets SIGUSR1 to checkpoint.
    pub fn signal_seconds(self, seconds: u32) -> Submit {
        self.export_arg("--signal-seconds", seconds)
    }
    /// Node features the job needs (`sbatch --constraint`), e.g. a GPU type: `a100`.
    pub fn constraint(mut self, features: &str) -> Submit {
        self.sbatch_args.push(format!("--constraint={features}"));
        self
    }
    /// Any other `sbatch` option, e.g. `--qos=debug`.
    pub fn sbatch_option(mut self, option: &str) -> Submit {
        self.sbatch_args.push(option.to_owned());
        self
    }
    /// An environment variable for the job (the notebook's settings: `EPOCHS`, `LR`, ...).
    pub fn env(mut self, key: &str, value: impl ToString) -> Submit {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
    /// Where the exported project goes (default `$RUN_DIR/jobs/<notebook name>`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Submit {
        self.dir = Some(dir.into());
        self
    }
}

#[derive(Debug)]
pub enum JobError {
    /// Nothing says which notebook to submit.
    NoNotebook,
    /// Not in a tch-kernel cell (the kernel's binary is needed to export).
    NoKernel,
    /// This program is the job of the notebook it would submit.
    SubmitsItself(PathBuf),
    Export(String),
    Build(String),
    Slurm(SlurmError),
    /// The job ended without completing.
    Ended {
        state: String,
        log_tail: String,
    },
    /// The user interrupted a wait; the job goes on.
    Interrupted,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::NoNotebook => write!(
                f,
                "which notebook? The kernel was not told its notebook's path: use Submit::notebook(\"NAME.ipynb\")"
            ),
            JobError::NoKernel => write!(
                f,
                "submit() runs `tch-kernel export`, which only a tch-kernel cell can find (TCH_KERNEL_EXE)"
            ),
            JobError::SubmitsItself(notebook) => write!(
                f,
                "this is the batch job of {}: submitting that notebook from inside its own \
                 job would start it again and again. Tag the cells that submit it \
                 `notebook-only`: the export leaves them out",
                notebook.display()
            ),
            JobError::Export(e) => write!(f, "exporting the notebook failed: {e}"),
            JobError::Build(e) => write!(f, "building the exported program failed:\n{e}"),
            JobError::Slurm(e) => write!(f, "{e}"),
            JobError::Ended { state, log_tail } => {
                write!(f, "the job ended {state}; the end of its log:\n{log_tail}")
            }
            JobError::Interrupted => write!(f, "stopped waiting (the job goes on)"),
        }
    }
}

impl std::error::Error for JobError {}

impl From<SlurmError> for JobError {
    fn from(e: SlurmError) -> Self {
        JobError::Slurm(e)
    }
}

/// A submitted job. When it resubmits itself at its time limit (the exported job script does,
/// after a checkpoint), the `Job` follows the chain to the newest job.
#[derive(Debug)]
pub struct Job {
    name: String,
    dir: PathBuf,
    /// The jobs of the chain so far, the newest last.
    chain: Mutex<Vec<JobId>>,
    /// For a [`sweep`]: how many array tasks.
    tasks: Option<usize>,
}

/// An exported and built notebook, ready to submit.
struct Prepared {
    name: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    status: DisplayHandle,
}

/// Exports the notebook, builds it (the first time this compiles tch: minutes), and submits it.
pub fn submit(options: Submit) -> Result<Job, JobError> {
    let ready = prepare(&options)?;
    let id = slurm_client::sbatch(
        Path::new("job.sbatch"),
        &ready.dir,
        &options.sbatch_args,
        &ready.env,
        &KERNEL_ONLY_ENV,
    )?;
    ready
        .status
        .update(crate::Text(format!("submitted {} as job {id}", ready.name)));
    Ok(Job {
        name: ready.name,
        dir: ready.dir,
        chain: Mutex::new(vec![id]),
        tasks: None,
    })
}

/// Submits the notebook once per setting, as one Slurm job array (`sbatch --array`): task `i`
/// runs with the environment variables of `settings[i]` (one learning rate each, say), after
/// one export and one build. Each task logs to `NAME-ARRAYID_TASK.out`. For one GPU type per
/// job, submit once per type instead (`.constraint("a100")`, ...): an array's tasks share
/// their options.
pub fn sweep<K: ToString, V: ToString>(
    options: Submit,
    settings: Vec<Vec<(K, V)>>,
) -> Result<Job, JobError> {
    if settings.is_empty() {
        return Err(JobError::Export(
            "a sweep needs at least one setting".into(),
        ));
    }
    let ready = prepare(&options)?;
    let script = ready.dir.join("job.sbatch");
    let job_script = std::fs::read_to_string(&script)
        .map_err(|e| JobError::Export(format!("{}: {e}", script.display())))?;
    let settings: Vec<Vec<(String, String)>> = settings
        .into_iter()
        .map(|s| {
            s.into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    std::fs::write(
        ready.dir.join("sweep.sbatch"),
        sweep_script(&job_script, &settings),
    )
    .map_err(|e| JobError::Export(e.to_string()))?;
    let mut args = vec![
        format!("--array=0-{}", settings.len() - 1),
        "--output=%x-%A_%a.out".to_owned(),
    ];
    args.extend(options.sbatch_args.iter().cloned());
    let id = slurm_client::sbatch(
        Path::new("sweep.sbatch"),
        &ready.dir,
        &args,
        &ready.env,
        &KERNEL_ONLY_ENV,
    )?;
    ready.status.update(crate::Text(format!(
        "submitted {} as array job {id} ({} tasks)",
        ready.name,
        settings.len()
    )));
    Ok(Job {
        name: ready.name,
        dir: ready.dir,
        chain: Mutex::new(vec![id]),
        tasks: Some(settings.len()),
    })
}

/// `job.sbatch` with each array task's settings exported first.
fn sweep_script(job_script: &str, settings: &[Vec<(String, String)>]) -> String {
    let mut block = String::from(
        "# One setting per array task (written by sweep()).\ncase \"${SLURM_ARRAY_TASK_ID:-}\" in\n",
    );
    for (i, setting) in settings.iter().enumerate() {
        let exports: Vec<String> = setting
            .iter()
            .filter(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            .map(|(k, v)| format!("export {k}='{}'", v.replace('\'', "'\\''")))
            .collect();
        block.push_str(&format!("    {i}) {} ;;\n", exports.join("; ")));
    }
    block.push_str("esac\n");
    match job_script.split_once("set -euo pipefail\n") {
        Some((head, rest)) => format!("{head}set -euo pipefail\n{block}{rest}"),
        None => format!("{job_script}\n{block}"),
    }
}

fn prepare(options: &Submit) -> Result<Prepared, JobError> {
    let notebook = options
        .notebook
        .clone()
        .or_else(this_notebook_path)
        .ok_or(JobError::NoNotebook)?;
    if let Some(running) = std::env::var_os(launch_env::job_script::EXPORTED_FROM_ENV)
        && submits_itself(&notebook, Path::new(&running))
    {
        return Err(JobError::SubmitsItself(notebook));
    }
    // Before minutes of building: is there a cluster to submit to?
    slurm_client::ping()?;
    let exe = std::env::var_os(child_protocol::env::KERNEL_EXE).ok_or(JobError::NoKernel)?;
    let stem = notebook
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "notebook".to_owned());
    let dir = options.dir.clone().unwrap_or_else(|| {
        let run_dir = std::env::var_os("RUN_DIR").unwrap_or_else(|| "runs".into());
        Path::new(&run_dir).join("jobs").join(&stem)
    });
    let status = DisplayHandle::new();
    status.display(crate::Text(format!(
        "exporting {} to {}",
        notebook.display(),
        dir.display()
    )));
    let export = std::process::Command::new(&exe)
        .arg("export")
        .arg(&notebook)
        .arg(&dir)
        .args(&options.export_args)
        .output()
        .map_err(|e| JobError::Export(e.to_string()))?;
    if !export.status.success() {
        return Err(JobError::Export(
            String::from_utf8_lossy(&export.stderr).trim().to_owned(),
        ));
    }
    let name = exported_name(&dir).ok_or_else(|| {
        JobError::Export(format!("no package name in {}/Cargo.toml", dir.display()))
    })?;
    status.update(crate::Text(format!(
        "building {name} (cargo build --release in {})",
        dir.display()
    )));
    let mut env = options.env.clone();
    // Every submission builds in one target dir, so only the first compiles tch.
    if let Some(cache) = std::env::var_os(child_protocol::env::kernelspec::CACHE_DIR)
        && std::env::var_os("CARGO_TARGET_DIR").is_none()
    {
        let target = Path::new(&cache).join("jobs-target");
        env.push(("CARGO_TARGET_DIR".into(), target.display().to_string()));
    }
    let mut cargo = std::process::Command::new("cargo");
    cargo
        .args(["build", "--release"])
        .current_dir(&dir)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let build = outside_the_kernel(&mut cargo)
        .output()
        .map_err(|e| JobError::Build(e.to_string()))?;
    if !build.status.success() {
        let stderr = String::from_utf8_lossy(&build.stderr);
        return Err(JobError::Build(tail_of(&stderr, 30)));
    }
    Ok(Prepared {
        name,
        dir,
        env,
        status,
    })
}

/// Whether `notebook` is the one this job was exported from (`running`, from its job script):
/// the same file, or, where `notebook` does not resolve from the job's directory, the same
/// file name.
fn submits_itself(notebook: &Path, running: &Path) -> bool {
    match (
        std::fs::canonicalize(notebook),
        std::fs::canonicalize(running),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => notebook.file_name().is_some() && notebook.file_name() == running.file_name(),
    }
}

/// The notebook JupyterLab runs this kernel for (`JPY_SESSION_NAME`). It may be relative to
/// the server's root; the kernel runs in the notebook's directory, where its file name is.
fn this_notebook_path() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("JPY_SESSION_NAME")?);
    if path.is_relative() && !path.exists() {
        return path.file_name().map(PathBuf::from);
    }
    Some(path)
}

fn exported_name(dir: &Path) -> Option<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let line = manifest.lines().find(|l| l.starts_with("name = "))?;
    Some(line["name = ".len()..].trim_matches('"').to_owned())
}

fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Job {
    /// The newest job of the chain.
    pub fn id(&self) -> JobId {
        self.chain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
            .unwrap_or_else(|| JobId(String::new()))
    }

    /// Every job of the chain (the first submission, then each resubmission).
    pub fn ids(&self) -> Vec<JobId> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The exported project, where the job runs and writes its log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What Slurm says about the newest job now (of a sweep: about its first task record).
    pub fn info(&self) -> Result<JobInfo, JobError> {
        Ok(self.task_infos()?.remove(0))
    }

    /// What Slurm says about each record of the job: one for a plain job; for a sweep, one per
    /// started task plus one for the tasks still pending together.
    pub fn task_infos(&self) -> Result<Vec<JobInfo>, JobError> {
        Ok(slurm_client::show_job(&self.id())?)
    }

    /// A sweep task's log.
    pub fn task_log(&self, task: usize) -> String {
        let path = self
            .dir
            .join(format!("{}-{}_{task}.out", self.name, self.id()));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The newest job's log file (`%x-%j.out` in the project dir).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-{}.out", self.name, self.id()))
    }

    /// The newest job's log so far (empty before it starts); of a sweep, every task's log,
    /// each under a `== task N ==` line.
    pub fn log(&self) -> String {
        match self.tasks {
            Some(n) => (0..n)
                .map(|t| format!("== task {t} ==\n{}", self.task_log(t)))
                .collect::<Vec<_>>()
                .join("\n"),
            None => std::fs::read_to_string(self.log_path()).unwrap_or_default(),
        }
    }

    /// Cancels the newest job (so the chain ends).
    pub fn cancel(&self) -> Result<(), JobError> {
        Ok(slurm_client::scancel(&self.id())?)
    }

    /// Waits until the job, and any job it resubmitted, has ended, showing its status and log
    /// tail in place. The stop button stops waiting, not the job.
    pub fn wait(&self) -> Result<JobInfo, JobError> {
        let handle = crate::display(self);
        loop {
            let infos = self.task_infos()?;
            handle.update(self);
            if infos.iter().all(|i| i.state.is_finished()) {
                let Some(info) = infos.into_iter().next_back() else {
                    return Err(JobError::Slurm(SlurmError::Unexpected {
                        command: format!("scontrol show job {}", self.id()),
                        output: String::new(),
                    }));
                };
                if self.tasks.is_some() {
                    return Ok(info);
                }
                match self.resubmitted() {
                    Some(next) => self
                        .chain
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(next),
                    None => return Ok(info),
                }
                continue;
            }
            let step = std::time::Instant::now();
            while step.elapsed() < POLL_INTERVAL {
                if crate::interrupted() {
                    return Err(JobError::Interrupted);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits (see [`Job::wait`]); the last job's log when it completed, else an error saying
    /// how it ended, with the end of its log.
    pub fn result(&self) -> Result<String, JobError> {
        let info = self.wait()?;
        let log = self.log();
        let ended = |s: &JobState| matches!(s, JobState::Completed | JobState::Gone);
        let all_completed = match self.tasks {
            Some(_) => self.task_infos()?.iter().all(|i| ended(&i.state)),
            None => ended(&info.state),
        };
        if all_completed {
            Ok(log)
        } else {
            Err(JobError::Ended {
                state: info.state.name().to_owned(),
                log_tail: tail_of(&log, 20),
            })
        }
    }

    /// The job the newest one submitted before it ended (the resume after a checkpoint).
    fn resubmitted(&self) -> Option<JobId> {
        if self.tasks.is_some() {
            return None;
        }
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.starts_with("Submitted batch job "))?;
        let id = JobId(line["Submitted batch job ".len()..].trim().to_owned());
        (!self.ids().contains(&id)).then_some(id)
    }

    /// `array job 49 NAME (4 tasks): 1 running, 2 pending, 1 completed`.
    fn sweep_line(&self, tasks: usize, infos: &Result<Vec<JobInfo>, JobError>) -> String {
        let what = match infos {
            Err(e) => format!("status unknown: {e}"),
            Ok(infos) => {
                let mut counts: Vec<(String, usize)> = Vec::new();
                for info in infos {
                    // A pending record stands for a range of tasks, e.g. `ArrayTaskId=2-3`.
                    let n = info
                        .fields
                        .get("ArrayTaskId")
                        .map(|r| task_count(r))
                        .unwrap_or(1);
                    let name = info.state.name().to_owned();
                    match counts.iter_mut().find(|(s, _)| *s == name) {
                        Some((_, c)) => *c += n,
                        None => counts.push((name, n)),
                    }
                }
                counts
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        format!(
            "array job {} {} ({tasks} tasks): {what}",
            self.id(),
            self.name
        )
    }

    fn status_line(&self, info: &Result<JobInfo, JobError>) -> String {
        let chain = self.ids();
        let resumed = if chain.len() > 1 {
            format!(" (resubmission {} of job {})", chain.len() - 1, chain[0])
        } else {
            String::new()
        };
        let what = match info {
            Err(e) => format!("status unknown: {e}"),
            Ok(info) => match &info.state {
                JobState::Pending => match &info.reason {
                    Some(reason) => format!("pending ({reason})"),
                    None => "pending".to_owned(),
                },
                JobState::Running => format!("running on {}, {}", info.nodes, info.run_time),
                JobState::Completed => format!("completed in {}", info.run_time),
                state if state.is_finished() && state != &JobState::Gone => format!(
                    "{} after {} (exit code {})",
                    state.name(),
                    info.run_time,
                    info.exit_code
                ),
                state => format!("{} {}", state.name(), info.run_time),
            },
        };
        format!("job {} {}{resumed}: {what}", self.id(), self.name)
    }
}

/// How many tasks `ArrayTaskId` names: `3`, `0-3`, `0-3%2`, `1,4-5`.
fn task_count(ids: &str) -> usize {
    ids.split('%')
        .next()
        .unwrap_or("")
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => match (a.parse::<usize>(), b.parse::<usize>()) {
                (Ok(a), Ok(b)) if b >= a => b - a + 1,
                _ => 1,
            },
            None => 1,
        })
        .sum()
}

impl RichDisplay for Job {
    fn mime_bundle(&self) -> MimeBundle {
        let (status, tail) = match self.tasks {
            Some(n) => {
                // The last line of each task's log.
                let lasts: Vec<String> = (0..n)
                    .filter_map(|t| {
                        let log = self.task_log(t);
                        log.lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .map(|l| format!("task {t}: {l}"))
                    })
                    .collect();
                (self.sweep_line(n, &self.task_infos()), lasts.join("\n"))
            }
            None => (
                self.status_line(&self.info()),
                tail_of(&self.log(), TAIL_LINES),
            ),
        };
        let mut html = String::from("<div class=\"tch-kernel-job\"><b>");
        html.push_str(&html_escape(&status));
        html.push_str("</b>");
        if !tail.is_empty() {
            html.push_str("<pre style=\"margin:0.3em 0 0 0\">");
            html.push_str(&html_escape(&tail));
            html.push_str("</pre>");
        }
        html.push_str("</div>");
        let text = if tail.is_empty() {
            status
        } else {
            format!("{status}\n{tail}")
        };
        MimeBundle::new()
            .with("text/plain", text)
            .with("text/html", html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &Path, ids: &[&str]) -> Job {
        Job {
            name: "digits".into(),
            dir: dir.to_owned(),
            chain: Mutex::new(ids.iter().map(|i| JobId(i.to_string())).collect()),
            tasks: None,
        }
    }

    #[test]
    fn a_job_knows_the_notebook_it_runs() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("07-data-parallel.ipynb");
        std::fs::write(&source, "{}").unwrap();
        let other = dir.path().join("02-first-classifier.ipynb");
        std::fs::write(&other, "{}").unwrap();
        assert!(submits_itself(&source, &source));
        assert!(submits_itself(
            &dir.path().join(".").join("07-data-parallel.ipynb"),
            &source
        ));
        assert!(!submits_itself(&other, &source));
        // A path that does not resolve from the job's directory: its file name decides.
        assert!(submits_itself(Path::new("07-data-parallel.ipynb"), &source));
        assert!(!submits_itself(
            Path::new("03-cifar10-resnet.ipynb"),
            &source
        ));
        let message = JobError::SubmitsItself(source).to_string();
        assert!(message.contains("notebook-only"), "{message}");
    }

    #[test]
    fn a_resubmission_in_the_log_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let first = job(dir.path(), &["7"]);
        std::fs::write(
            dir.path().join("digits-7.out"),
            "epoch 6 done\nresubmitting\nSubmitted batch job 8\n",
        )
        .unwrap();
        assert_eq!(first.resubmitted(), Some(JobId("8".into())));
        let done = job(dir.path(), &["7", "8"]);
        std::fs::write(dir.path().join("digits-8.out"), "final weights: [1.0]\n").unwrap();
        assert_eq!(done.resubmitted(), None);
        assert_eq!(done.log_path(), dir.path().join("digits-8.out"));
    }

    #[test]
    fn the_status_line_says_where_and_how_long() {
        let dir = tempfile::tempdir().unwrap();
        let j = job(dir.path(), &["7", "8"]);
        let info = slurm_client::parse_job_line(
            "JobId=8 JobName=digits JobState=RUNNING Reason=None NodeList=gpu17 RunTime=00:01:23 ExitCode=0:0",
        )
        .unwrap();
        assert_eq!(
            j.status_line(&Ok(info)),
            "job 8 digits (resubmission 1 of job 7): running on gpu17, 00:01:23"
        );
        let pending = slurm_client::parse_job_line(
            "JobId=8 JobName=digits JobState=PENDING Reason=Resources NodeList=(null) RunTime=00:00:00",
        )
        .unwrap();
        assert!(
            j.status_line(&Ok(pending))
                .ends_with(": pending (Resources)")
        );
        let failed = slurm_client::parse_job_line(
            "JobId=8 JobName=digits JobState=FAILED Reason=NonZeroExitCode NodeList=gpu17 RunTime=00:00:05 ExitCode=1:0",
        )
        .unwrap();
        assert!(
            j.status_line(&Ok(failed))
                .ends_with(": failed after 00:00:05 (exit code 1:0)")
        );
    }

    #[test]
    fn a_sweep_exports_each_tasks_settings_and_counts_its_tasks() {
        let script = "#!/bin/bash\n#SBATCH --job-name=x\nset -euo pipefail\nsrun ./x\n";
        let settings = vec![
            vec![("LR".to_owned(), "0.1".to_owned())],
            vec![
                ("LR".to_owned(), "it's".to_owned()),
                ("bad key".to_owned(), "x".to_owned()),
            ],
        ];
        let out = sweep_script(script, &settings);
        assert!(
            out.contains("set -euo pipefail\n# One setting per array task"),
            "{out}"
        );
        assert!(out.contains("    0) export LR='0.1' ;;\n"), "{out}");
        assert!(
            out.contains("    1) export LR='it'\\''s' ;;\n"),
            "quoted, bad keys dropped: {out}"
        );
        assert!(out.ends_with("esac\nsrun ./x\n"));
        assert_eq!(task_count("3"), 1);
        assert_eq!(task_count("0-3"), 4);
        assert_eq!(task_count("2-3%1"), 2);
        assert_eq!(task_count("1,4-5"), 3);
    }

    #[test]
    fn options_become_export_and_sbatch_arguments() {
        let s = Submit::notebook("a.ipynb")
            .gres("gpu:a100:1")
            .nodes(2)
            .ntasks_per_node(4)
            .time("00:10:00")
            .constraint("h100")
            .env("LR", 0.1);
        assert_eq!(
            s.export_args,
            [
                "--gres",
                "gpu:a100:1",
                "--nodes",
                "2",
                "--ntasks-per-node",
                "4",
                "--time",
                "00:10:00"
            ]
        );
        assert_eq!(s.sbatch_args, ["--constraint=h100"]);
        assert_eq!(s.env, [("LR".to_owned(), "0.1".to_owned())]);
    }
}
