//! How evaluation errors look in a notebook: the `error` reply's name, value and (ANSI
//! colored) traceback, saying what was kept and what was lost.

use jupyter_server::wire::content::ErrorInfo;
use rust_evaluator::EvalError;

pub const RED: &str = "\x1b[0;31m";
pub const BOLD: &str = "\x1b[1m";
pub const RESET: &str = "\x1b[0m";

pub fn error_info(error: EvalError) -> ErrorInfo {
    let lost = "All variables were lost; definitions (fn, struct, use) and :dep crates are kept.";
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
        EvalError::Interrupted {
            variables_kept: true,
        } => ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: "the cell was interrupted".into(),
            traceback: vec![
                format!(
                    "{RED}{BOLD}KeyboardInterrupt{RESET}: the cell stopped at a check for interrupts."
                ),
                "Variables defined before this cell are kept; those this cell defined are not."
                    .into(),
            ],
        },
        EvalError::Interrupted {
            variables_kept: false,
        } => ErrorInfo {
            ename: "KeyboardInterrupt".into(),
            evalue: "the cell was interrupted".into(),
            traceback: vec![
                format!("{RED}{BOLD}KeyboardInterrupt{RESET}: the cell was interrupted."),
                format!(
                    "It did not stop at a check for interrupts in time, so the evaluation process was restarted. {lost}\n\
                     Long loops keep their variables when they call check_interrupt() or iterate through progress(..)."
                ),
            ],
        },
        EvalError::ProcessDied { reason } => ErrorInfo {
            ename: "EvaluatorCrashed".into(),
            evalue: format!("the evaluation process died: {}", reason.trim()),
            traceback: vec![
                format!(
                    "{RED}{BOLD}The evaluation process died{RESET}: {}",
                    reason.trim()
                ),
                format!("It was restarted. {lost}"),
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
