//! The storage crate's error type, and its mapping to Kafka error codes.

use std::path::PathBuf;

/// Kafka error codes that storage errors map to (the protocol's numbers).
pub mod kafka_code {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
}

/// Everything a partition log can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A batch offered for append is damaged: bad length, magic or checksum.
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    /// A batch offered for append is well formed but its contents break a
    /// rule of the format (record count, offset deltas, codec).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    /// A batch larger than the topic (or the hard ceiling) allows.
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    /// A read outside [log start offset, log end offset].
    #[error("offset {offset} is outside the log [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// Data read back from disk failed validation. It is never served.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    CorruptData {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// An earlier write or fsync failed; the log acknowledges nothing until
    /// it is reopened (and recovered).
    #[error("log {0} is poisoned by an earlier I/O failure; reopen it to recover")]
    Poisoned(PathBuf),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// A configuration value outside its allowed range.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// The Kafka error code a response should carry for this error.
    pub fn kafka_code(&self) -> i16 {
        match self {
            StorageError::CorruptMessage(_) => kafka_code::CORRUPT_MESSAGE,
            StorageError::InvalidRecord(_) => kafka_code::INVALID_RECORD,
            StorageError::MessageTooLarge { .. } => kafka_code::MESSAGE_TOO_LARGE,
            StorageError::OffsetOutOfRange { .. } => kafka_code::OFFSET_OUT_OF_RANGE,
            StorageError::CorruptData { .. }
            | StorageError::Poisoned(_)
            | StorageError::Io { .. } => kafka_code::KAFKA_STORAGE_ERROR,
            StorageError::Closed | StorageError::InvalidConfig(_) => {
                kafka_code::UNKNOWN_SERVER_ERROR
            }
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: impl Into<std::io::Error>) -> Self {
        StorageError::Io {
            path: path.into(),
            source: source.into(),
        }
    }
}

/// Converts glommio's error into `std::io::Error`, keeping its message.
pub(crate) fn glommio_io(e: glommio::GlommioError<()>) -> std::io::Error {
    std::io::Error::from(e)
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
