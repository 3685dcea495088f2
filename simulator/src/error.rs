//! What can stop a simulation before its checkers run.

/// The simulator's errors. A checker that fails is not an error: it is reported.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The flags or the configuration are inconsistent.
    #[error("{0}")]
    Config(String),
    /// A node could not be started.
    #[error("starting a node: {0}")]
    Node(#[from] node::Error),
    /// A store could not be opened on its disk.
    #[error("opening a chunk store: {0}")]
    Store(#[from] overlay::StoreError),
    /// No leader was elected in time at the start.
    #[error("no ledger leader within {seconds} virtual seconds of the start")]
    NoLeader {
        /// The bound.
        seconds: u64,
    },
    /// Writing the report failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error(transparent)]
    Plot(#[from] node::caliper::PlotError),
}
