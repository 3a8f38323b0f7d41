//! Why a check or repair could not run at all (the command exits with 2).
//! Problems *in* the store are not errors: they go into the [`crate::Report`].

use std::path::{Path, PathBuf};

use engine::config::ConfigError;
use engine::index::IndexFormatError;
use engine::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A store setting (from broker.conf, `--set` or the engine's defaults)
    /// is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A command-line option has a value fsck cannot work with.
    #[error("{option} {value} is not valid ({expected})")]
    BadOption {
        option: &'static str,
        value: String,
        expected: String,
    },
    #[error("index layout: {0}")]
    IndexLayout(#[from] IndexFormatError),
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// The directory holds none of what every store has.
    #[error(
        "{} holds no store: no commitlog directory, no consumequeue directory and no checkpoint",
        .0.display()
    )]
    NoStore(PathBuf),
    /// The file size was not given and the files suggest one that no broker
    /// can have been configured with, so the files themselves are damaged.
    #[error(
        "cannot tell the {what} file size: the files suggest {size} bytes, which is not a \
         multiple of {multiple}, so the files are damaged; give the size with {option} or \
         -c broker.conf"
    )]
    SizeUnknown {
        what: &'static str,
        size: u64,
        multiple: u64,
        option: &'static str,
    },
    /// The index layout was not given and no index file has the size the
    /// configured one needs: the store was written with other settings.
    #[error(
        "{} is {size} bytes, but maxHashSlotNum {slots} and maxIndexNum {entries} make \
         index files of {expected} bytes and no index file has that size; give the store's \
         values with --set maxHashSlotNum=N --set maxIndexNum=N or -c broker.conf",
        file.display()
    )]
    IndexLayoutUnknown {
        file: PathBuf,
        size: u64,
        slots: u32,
        entries: u32,
        expected: u64,
    },
    #[error("{} is in use by a running broker; stop it first", .0.display())]
    InUse(PathBuf),
    /// The engine failed (taking the lock, rebuilding derived files, ...).
    #[error("{what}: {source}")]
    Engine {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("{} at {pos}: {len} damaged bytes are too few for a quarantine record", file.display())]
    QuarantineTooShort { file: PathBuf, pos: u64, len: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches the path an I/O call was about to its error.
pub(crate) trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> AtPath<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
