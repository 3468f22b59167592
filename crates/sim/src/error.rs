//! Input errors: every malformed input names its file, line, column and value.

use std::path::PathBuf;

/// An error reading user input (workloads, clusters, profiles).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("{file}:{line}: column {column:?}: {message} (value {value:?})")]
    Field {
        file: PathBuf,
        line: u64,
        column: String,
        value: String,
        message: String,
    },
    #[error("{file}:{line}: {message}")]
    Row {
        file: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl InputError {
    pub fn field(
        file: &std::path::Path,
        line: u64,
        column: &str,
        value: &str,
        message: impl Into<String>,
    ) -> Self {
        InputError::Field {
            file: file.to_path_buf(),
            line,
            column: column.to_string(),
            value: value.to_string(),
            message: message.into(),
        }
    }

    pub fn file(file: &std::path::Path, message: impl Into<String>) -> Self {
        InputError::File {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    pub fn io(file: &std::path::Path, source: std::io::Error) -> Self {
        InputError::Io {
            file: file.to_path_buf(),
            source,
        }
    }
}
