//! The `spillway` command line: parse, set up logging, hand over to the command ([`cli::run`]).

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One TLS crypto provider for kube and reqwest alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = cli::Cli::parse();
    if let Err(e) = spillway::telemetry::init(&args.log, args.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    cli::run(args.command).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
