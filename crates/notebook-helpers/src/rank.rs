//! Whether this process is rank 0 of its job (see `launch-env`): in a job of several ranks only
//! rank 0 draws progress bars, writes MLLOG lines, checkpoints and a batch job's outputs, as a
//! PyTorch script guards them with `if rank == 0`.

use std::sync::OnceLock;

/// Read once: the launcher's variables do not change while a process runs.
pub(crate) fn is_main_rank() -> bool {
    static MAIN: OnceLock<bool> = OnceLock::new();
    *MAIN.get_or_init(launch_env::is_main_process)
}
