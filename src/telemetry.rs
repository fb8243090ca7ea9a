//! Logging setup.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Installs the global subscriber: logs to stderr, so stdout stays for command output.
pub fn init(filter: &str, format: LogFormat) -> Result<(), crate::Error> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| crate::Error::Config(format!("--log {filter:?}: {e}")))?;
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(std::io::stderr).compact())
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().with_writer(std::io::stderr).json())
            .try_init(),
    };
    result.map_err(|e| crate::Error::Config(format!("logging already set up: {e}")))
}
