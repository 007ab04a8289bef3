//! `roundtrip demo`: the classroom scenarios of `roundtrip_demo`, told on the
//! terminal.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use roundtrip_demo::{self as demo, DemoOptions, Line, SCENARIOS};

use super::{EventArgs, usage_error};

#[derive(Args)]
pub struct DemoArgs {
    /// Scenario to run (see --list).
    #[arg(value_name = "SCENARIO", default_value = "reuse")]
    scenario: String,
    /// List the scenarios.
    #[arg(long)]
    list: bool,
    /// Pause between steps so a class can follow along.
    #[arg(long)]
    slow: bool,
    #[command(flatten)]
    events: EventArgs,
}

pub async fn run(args: DemoArgs) -> ExitCode {
    if args.list {
        for scenario in SCENARIOS {
            println!("{:<20} {}", scenario.name, scenario.about);
        }
        return ExitCode::SUCCESS;
    }
    if demo::find(&args.scenario).is_none() {
        return usage_error(&format!(
            "unknown scenario {:?}; `roundtrip demo --list` shows them",
            args.scenario
        ));
    }
    let events = match args.events.events() {
        Ok(events) => events,
        Err(message) => return usage_error(&message),
    };
    let options = DemoOptions {
        events,
        inspect_from_env: args.events.inspect_from_env(),
        slow: args.slow,
        narrator: Arc::new(print_line),
    };
    match demo::run(&args.scenario, options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("roundtrip demo: {message}");
            ExitCode::from(1)
        }
    }
}

/// Story lines as they are; events indented, with the event's name at the right.
fn print_line(line: Line) {
    match line {
        Line::Story(text) => println!("{text}"),
        Line::Event { sentence, event } => println!("    {sentence:<78} [{event}]"),
    }
}
