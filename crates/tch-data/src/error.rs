//! What can go wrong reading a data set, each naming the file or the setting at fault.

use std::path::PathBuf;

/// An error of a data set or a loader: the message names the file, folder or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that cannot be read or decoded (truncated, not an image, ...).
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A folder, list or array that cannot make a data set (empty class, mismatched lengths...).
    #[error("{0}")]
    Invalid(String),
    /// A loader's worker panicked; the message is the panic's.
    #[error("a data loader worker panicked: {0}")]
    WorkerPanic(String),
    /// libtorch refused an operation (reading an array, pinning memory, ...).
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl DataError {
    pub(crate) fn invalid(message: impl Into<String>) -> DataError {
        DataError::Invalid(message.into())
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, reason: impl ToString) -> DataError {
        DataError::BadFile {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
