//! `msrfilter`: check, explain, pack, diff and verify MSR filter policies (and raw filters in
//! JSON), and demo them on the real kernel.
//!
//! One module per job: [`args`] is the command line, [`load`] reads policies and raw filters,
//! [`report`] turns results and failures into output and exit statuses; one module per command
//! (`check`, `explain` in `check`, `pack`, `diff`, `verify`, `demo`).

use std::process::ExitCode;

use clap::Parser;

mod args;
mod check;
mod demo;
mod diff;
mod from_kvm;
mod load;
mod pack;
mod raw;
mod report;
mod swap;
mod verify;

pub(crate) use args::{AccessArg, Emit, Format};
use args::{Cli, Command};
pub(crate) use load::{read_input, Loaded};
pub(crate) use report::{insn, msr_label, plural, print_json, Failure, ENVIRONMENT, FAILURE};

fn main() -> ExitCode {
    let cli = Cli::parse();
    load::set_max_input(cli.max_input_bytes);
    let result = match cli.command {
        Command::Check { file, raw, format } => check::check(&file, raw, format),
        Command::Explain {
            file,
            msr,
            access,
            raw,
            format,
        } => check::explain(&file, raw, msr, access.unwrap_or(AccessArg::Rw), format),
        Command::Pack { policy, emit, name } => pack::pack(&policy, emit, name.as_deref()),
        Command::Diff { old, new } => diff::diff(&old, &new),
        Command::Verify { policy, verbose } => verify::verify(&policy, verbose),
        Command::FromKvm { profile } => from_kvm::from_kvm(profile.as_deref()),
        Command::Demo { swap: true, .. } => swap::demo_swap(),
        Command::Demo {
            policy,
            ignore_msrs,
            ..
        } => demo::demo(policy.as_deref(), ignore_msrs),
    };
    // Output that could not be written is a failure too (unless a reader closed the pipe).
    let output = report::finish_output();
    match result.and(output) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report();
            ExitCode::from(failure.status)
        }
    }
}
