//! Slurm's command-line clients from Rust, for jobs submitted from a notebook cell: `sbatch` a
//! script, read a job's state with `scontrol show job`, `scancel` it.
//!
//! The clients are run as the user would run them, so they see the site's configuration
//! (`SLURM_CONF`, `/etc/slurm`). Nothing here needs accounting (`sacct`): a job the controller
//! no longer knows (it ended more than `MinJobAge` ago) is reported as [`JobState::Gone`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;

/// A Slurm job id (of an array job: the array's id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug)]
pub enum SlurmError {
    /// A client could not be started (Slurm not installed, not on PATH).
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// A client ran and failed; its stderr.
    Failed { command: String, stderr: String },
    /// A client's output was not what Slurm prints.
    Unexpected { command: String, output: String },
}

impl fmt::Display for SlurmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlurmError::Spawn { command, source } => {
                write!(
                    f,
                    "cannot run `{command}` ({source}): is Slurm installed here?"
                )
            }
            SlurmError::Failed { command, stderr } => {
                write!(f, "`{command}` failed: {}", stderr.trim())
            }
            SlurmError::Unexpected { command, output } => {
                write!(
                    f,
                    "`{command}` printed something unexpected: {}",
                    output.trim()
                )
            }
        }
    }
}

impl std::error::Error for SlurmError {}

/// The states `scontrol` reports (`JOB_STATE_*`), and `Gone` for a job it no longer knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    Suspended,
    Completing,
    Completed,
    Cancelled,
    Failed,
    Timeout,
    NodeFail,
    OutOfMemory,
    Preempted,
    /// Ended long enough ago that the controller forgot it (see the module docs).
    Gone,
    Other(String),
}

impl JobState {
    pub fn parse(text: &str) -> JobState {
        match text {
            "PENDING" => JobState::Pending,
            "RUNNING" => JobState::Running,
            "SUSPENDED" => JobState::Suspended,
            "COMPLETING" => JobState::Completing,
            "COMPLETED" => JobState::Completed,
            "CANCELLED" => JobState::Cancelled,
            "FAILED" => JobState::Failed,
            "TIMEOUT" => JobState::Timeout,
            "NODE_FAIL" => JobState::NodeFail,
            "OUT_OF_MEMORY" => JobState::OutOfMemory,
            "PREEMPTED" => JobState::Preempted,
            other => JobState::Other(other.to_owned()),
        }
    }

    /// True once the job will not run any more (`Completing` still cleans up on its node).
    pub fn is_finished(&self) -> bool {
        !matches!(
            self,
            JobState::Pending | JobState::Running | JobState::Suspended | JobState::Completing
        )
    }

    pub fn name(&self) -> &str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Suspended => "suspended",
            JobState::Completing => "completing",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
            JobState::Timeout => "timed out",
            JobState::NodeFail => "node failed",
            JobState::OutOfMemory => "out of memory",
            JobState::Preempted => "preempted",
            JobState::Gone => "ended (no longer known to Slurm)",
            JobState::Other(s) => s,
        }
    }
}

/// One job (or array task) as `scontrol show job -o` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub id: JobId,
    pub state: JobState,
    pub name: String,
    /// Nodes it runs or ran on; empty while pending.
    pub nodes: String,
    /// `RunTime`, e.g. `00:01:23`.
    pub run_time: String,
    /// Why it waits (`Reason`), e.g. `Resources`, `Dependency`; `None` when there is no reason.
    pub reason: Option<String>,
    /// `ExitCode`, e.g. `0:0` (code:signal).
    pub exit_code: String,
    /// The file its output goes to (`StdOut`).
    pub stdout: String,
    /// All fields, for anything else.
    pub fields: BTreeMap<String, String>,
}

/// Parses one line of `scontrol show job -o` (`Key=Value` pairs, values without spaces except
/// the last ones, such as `Command=`, which may hold spaces).
pub fn parse_job_line(line: &str) -> Option<JobInfo> {
    let mut fields = BTreeMap::new();
    let mut last: Option<String> = None;
    for token in line.split_whitespace() {
        match token.split_once('=') {
            Some((key, value))
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_:/".contains(c)) =>
            {
                fields.insert(key.to_owned(), value.to_owned());
                last = Some(key.to_owned());
            }
            _ => {
                // A value with spaces (e.g. a path): belongs to the previous key.
                if let Some(value) = last.as_ref().and_then(|k| fields.get_mut(k)) {
                    value.push(' ');
                    value.push_str(token);
                }
            }
        }
    }
    let get = |key: &str| fields.get(key).cloned().unwrap_or_default();
    let id = fields.get("JobId")?.clone();
    let reason = fields
        .get("Reason")
        .filter(|r| r.as_str() != "None")
        .cloned();
    Some(JobInfo {
        id: JobId(id),
        state: JobState::parse(&get("JobState")),
        name: get("JobName"),
        nodes: fields
            .get("NodeList")
            .filter(|n| n.as_str() != "(null)")
            .cloned()
            .unwrap_or_default(),
        run_time: get("RunTime"),
        reason,
        exit_code: get("ExitCode"),
        stdout: get("StdOut"),
        fields,
    })
}

fn run(mut command: Command) -> Result<String, SlurmError> {
    let shown = format!("{command:?}").replace('"', "");
    let output = command.output().map_err(|source| SlurmError::Spawn {
        command: shown.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(SlurmError::Failed {
            command: shown,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Submits `script` from `dir` with extra `sbatch` options (they override the script's
/// `#SBATCH` lines), extra environment for the job, and variables of this process the job must
/// not inherit (`sbatch` passes the whole environment on).
pub fn sbatch(
    script: &Path,
    dir: &Path,
    options: &[String],
    env: &[(String, String)],
    unset: &[&str],
) -> Result<JobId, SlurmError> {
    let mut command = Command::new("sbatch");
    command
        .arg("--parsable")
        .args(options)
        .arg(script)
        .current_dir(dir);
    command.envs(env.iter().map(|(k, v)| (k, v)));
    for name in unset {
        command.env_remove(name);
    }
    let out = run(command)?;
    // `--parsable` prints `ID` or `ID;CLUSTER`.
    let id = out.trim().split(';').next().unwrap_or("").to_owned();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(SlurmError::Unexpected {
            command: "sbatch --parsable".into(),
            output: out,
        });
    }
    Ok(JobId(id))
}

/// The job's state and its array tasks' (one entry for a plain job).
pub fn show_job(id: &JobId) -> Result<Vec<JobInfo>, SlurmError> {
    let mut command = Command::new("scontrol");
    command.args(["show", "job", "-o", &id.0]);
    match run(command) {
        Ok(out) => {
            let jobs: Vec<JobInfo> = out.lines().filter_map(parse_job_line).collect();
            if jobs.is_empty() {
                return Err(SlurmError::Unexpected {
                    command: format!("scontrol show job {id}"),
                    output: out,
                });
            }
            Ok(jobs)
        }
        Err(SlurmError::Failed { stderr, .. }) if stderr.contains("Invalid job id") => {
            Ok(vec![JobInfo {
                id: id.clone(),
                state: JobState::Gone,
                name: String::new(),
                nodes: String::new(),
                run_time: String::new(),
                reason: None,
                exit_code: String::new(),
                stdout: String::new(),
                fields: BTreeMap::new(),
            }])
        }
        Err(e) => Err(e),
    }
}

/// Checks that the Slurm controller answers (`scontrol ping`).
pub fn ping() -> Result<(), SlurmError> {
    let mut command = Command::new("scontrol");
    command.arg("ping");
    let out = run(command)?;
    if out.contains("is UP") {
        Ok(())
    } else {
        Err(SlurmError::Failed {
            command: "scontrol ping".into(),
            stderr: out,
        })
    }
}

/// Cancels a job (all of an array's tasks).
pub fn scancel(id: &JobId) -> Result<(), SlurmError> {
    let mut command = Command::new("scancel");
    command.arg(&id.0);
    run(command).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "JobId=42 JobName=digits UserId=ana(1000) GroupId=ana(1000) MCS_label=N/A Priority=1 Nice=0 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:01:23 TimeLimit=00:30:00 NodeList=gpu17 BatchHost=gpu17 NumNodes=1 WorkDir=/home/ana/my jobs/digits StdErr=/home/ana/my jobs/digits/digits-42.out StdIn=/dev/null StdOut=/home/ana/my jobs/digits/digits-42.out Power=";

    #[test]
    fn a_running_job_is_read_from_scontrol() {
        let job = parse_job_line(RUNNING).unwrap();
        assert_eq!(job.id, JobId("42".into()));
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.name, "digits");
        assert_eq!(job.nodes, "gpu17");
        assert_eq!(job.run_time, "00:01:23");
        assert_eq!(job.reason, None);
        assert_eq!(job.exit_code, "0:0");
        assert_eq!(
            job.stdout, "/home/ana/my jobs/digits/digits-42.out",
            "paths with spaces"
        );
        assert!(!job.state.is_finished());
    }

    #[test]
    fn a_pending_array_task_has_a_reason_and_no_node() {
        let line = "JobId=50 ArrayJobId=49 ArrayTaskId=1 JobName=sweep JobState=PENDING Reason=Dependency NodeList=(null) RunTime=00:00:00 ExitCode=0:0 StdOut=/tmp/sweep-49_1.out";
        let job = parse_job_line(line).unwrap();
        assert_eq!(job.state, JobState::Pending);
        assert_eq!(job.reason.as_deref(), Some("Dependency"));
        assert_eq!(job.nodes, "");
        assert_eq!(job.fields["ArrayTaskId"], "1");
    }

    #[test]
    fn finished_states() {
        for (text, finished) in [
            ("COMPLETED", true),
            ("TIMEOUT", true),
            ("CANCELLED", true),
            ("COMPLETING", false),
            ("PENDING", false),
            ("REQUEUED", true),
        ] {
            assert_eq!(JobState::parse(text).is_finished(), finished, "{text}");
        }
        assert_eq!(
            JobState::parse("REQUEUED"),
            JobState::Other("REQUEUED".into())
        );
        assert!(parse_job_line("no job here").is_none());
    }
}
