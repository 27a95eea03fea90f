//! How evaluation errors look in a notebook: the `error` reply's name, value and (ANSI
//! colored) traceback, saying what was kept and what was lost.

use jupyter_server::wire::content::ErrorInfo;
use rust_evaluator::{EvalError, RestoreReport};

pub use rust_evaluator::ansi::{BOLD, RED, RESET};

/// What a restart of the evaluation process took, what came back from the snapshot, and what
/// it kept.
fn lost_variables(lost: &[String], restored: Option<&RestoreReport>) -> String {
    let kept = "Definitions (fn, struct, use) and :dep crates are kept; run the cells that define \
                the variables again.";
    if let Some(report) = restored.filter(|r| !r.is_empty()) {
        let mut text = format!("{}", report).trim_end().to_owned();
        if !lost.is_empty() {
            text.push_str(&format!(
                "\nLost (not in the snapshot): {}.",
                lost.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return format!(
            "{text}\nDefinitions (fn, struct, use) and :dep crates are kept. The restored values \
             are those after the last cell that finished."
        );
    }
    match lost {
        [] => format!("No variables were lost (none were defined). {kept}"),
        names => format!(
            "Lost: {} ({} variable{}). {kept}",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            names.len(),
            if names.len() == 1 { "" } else { "s" }
        ),
    }
}

pub fn error_info(error: EvalError) -> ErrorInfo {
    match error {
        EvalError::Compile { message, report } => ErrorInfo {
            ename: "CompilationError".into(),
            evalue: message,
            traceback: report,
        },
        EvalError::Panic { message, location } => {
            let mut traceback = vec![match &location {
                Some(loc) => format!("{RED}{BOLD}thread 'main' panicked at {loc}:{RESET}"),
                None => format!("{RED}{BOLD}thread 'main' panicked:{RESET}"),
            }];
            traceback.extend(message.lines().map(|l| format!("{RED}{l}{RESET}")));
            traceback.push("Variables defined before this cell are kept.".into());
            ErrorInfo {
                ename: "Panic".into(),
                evalue: message,
                traceback,
            }
        }
        EvalError::ErrorReturned { message } => {
            let mut traceback = vec![format!(
                "{RED}{BOLD}Error{RESET}: a `?` in this cell returned an error:"
            )];
            traceback.extend(message.lines().map(|l| format!("{RED}{l}{RESET}")));
            traceback.push("Variables defined before this cell are kept.".into());
            ErrorInfo {
                ename: "Error".into(),
                evalue: message,
                traceback,
            }
        }
        EvalError::Interrupted {
            variables_kept: true,
            ..
        } => ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: "the cell was interrupted".into(),
            traceback: vec![
                format!("{RED}{BOLD}KeyboardInterrupt{RESET}: the cell stopped where it was."),
                "Variables defined before this cell are kept; those this cell defined are not."
                    .into(),
            ],
        },
        EvalError::Interrupted {
            variables_kept: false,
            lost,
            restored,
        } => ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: "the cell was interrupted".into(),
            traceback: vec![
                format!("{RED}{BOLD}KeyboardInterrupt{RESET}: the cell was interrupted."),
                format!(
                    "It was inside one long call that does not come back to the cell's code (a \
                     native function, a sleep, a blocking read), so the evaluation process was \
                     restarted. {}",
                    lost_variables(&lost, restored.as_ref())
                ),
            ],
        },
        EvalError::ProcessDied {
            reason,
            lost,
            restored,
            out_of_memory: Some(why),
        } => ErrorInfo {
            ename: "OutOfMemory".into(),
            evalue: format!("out of memory: {why}"),
            traceback: vec![
                format!("{RED}{BOLD}Out of memory{RESET}: {why}."),
                format!(
                    "The evaluation process was restarted ({}). {}",
                    reason.trim(),
                    lost_variables(&lost, restored.as_ref())
                ),
                "Free tensors you no longer need, use smaller batches, or ask the job for more \
                 memory (sbatch --mem)."
                    .into(),
            ],
        },
        EvalError::ProcessDied {
            reason,
            lost,
            restored,
            out_of_memory: None,
        } => ErrorInfo {
            ename: "EvaluatorCrashed".into(),
            evalue: format!("the evaluation process died: {}", reason.trim()),
            traceback: vec![
                format!(
                    "{RED}{BOLD}The evaluation process died{RESET}: {}",
                    reason.trim()
                ),
                format!(
                    "It was restarted. {}",
                    lost_variables(&lost, restored.as_ref())
                ),
            ],
        },
        EvalError::VariablesLost(vars) => ErrorInfo {
            ename: "VariablesLost".into(),
            evalue: format!("redefining a type dropped: {}", vars.join(", ")),
            traceback: vec![format!(
                "A type was redefined, so these variables were dropped: {}",
                vars.join(", ")
            )],
        },
        EvalError::Other(message) => ErrorInfo {
            ename: "Error".into(),
            evalue: message.clone(),
            traceback: vec![format!("{RED}{message}{RESET}")],
        },
    }
}
