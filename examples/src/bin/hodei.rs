//! `hodei`: the command-line client of a Hodei server.
//!
//! ```text
//! hodei job run -e GREETING=hi --timeout 30s -- sh -c 'echo $GREETING'
//! hodei job run --script build.sh
//! hodei job submit -f spec.yaml
//! hodei job list --state running
//! hodei job logs <id> -f
//! hodei worker list
//! hodei provider list -o json
//! ```
//!
//! The server address comes from `--server` or `HODEI_SERVER`
//! (default `http://localhost:50051`).

#[path = "../cli/mod.rs"]
mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
