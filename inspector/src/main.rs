//! `roundtrip-inspector`: the desktop app.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::{Parser, Subcommand};
use roundtrip_inspector::InspectorApp;
use roundtrip_inspector::model::View;
use roundtrip_inspector::sources::{Feed, Hub, RunOptions, SourceId, read_jsonl};
use roundtrip_proxy::Mitm;
use std::sync::mpsc::Receiver;

#[derive(Parser)]
#[command(
    name = "roundtrip-inspector",
    version,
    about = "Watch every connection's life: dial, idle, reuse, body EOF, close"
)]
struct Cli {
    /// Where programs stream their events (`--inspect ADDR` / `ROUNDTRIP_INSPECT=ADDR`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7077")]
    listen: String,
    /// Do not listen for programs.
    #[arg(long)]
    no_listen: bool,
    /// Open an events file (JSON Lines) for replay; repeatable.
    #[arg(long, value_name = "FILE")]
    open: Vec<PathBuf>,
    /// Run a `roundtrip demo` scenario at start.
    #[arg(long, value_name = "SCENARIO")]
    demo: Option<String>,
    /// Demos pause between steps so a class can follow.
    #[arg(long)]
    slow: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD with HTTP_PROXY/HTTPS_PROXY set to an embedded forward proxy and show
    /// its connections.
    Run {
        /// Terminate the command's TLS with certificates from a local CA so its HTTPS
        /// requests are seen; the command is told to trust the CA (SSL_CERT_FILE, …).
        #[arg(long)]
        mitm: bool,
        /// The MITM CA (certificate and key, PEM): made there when missing, else loaded
        /// [default: ~/.local/share/roundtrip/mitm-ca.pem].
        #[arg(long, value_name = "FILE", requires = "mitm")]
        mitm_ca: Option<PathBuf>,
        /// No proxy: draw CMD's (and its children's) TCP connections from the kernel —
        /// any protocol, for programs that ignore HTTP_PROXY; no URLs. As root, from the
        /// kernel's trace events: every connection, however short, with the pid that
        /// opened it. Otherwise sampled every 50 ms, which misses connections shorter
        /// than that; the status line (and the recording's `watch_start`) says which.
        #[arg(long, conflicts_with = "mitm")]
        watch: bool,
        /// No window: write the events to FILE (JSON Lines, what `--open` reads) until
        /// CMD exits, then exit with its code (for a server without a display). The
        /// proxy's idle connections are closed when CMD exits, so FILE holds their ends.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Draw the TCP connections of running process PID and its children from the
    /// kernel (connections, peers, bytes; no URLs). As root, from the kernel's trace
    /// events: every new connection, however short, with the pid that opened it (those
    /// open already are sampled). Otherwise sampled every 50 ms, which misses
    /// connections shorter than that.
    Watch {
        #[arg(value_name = "PID")]
        pid: u32,
        /// No window: write the events to FILE (JSON Lines, what `--open` reads) until
        /// PID and its children have exited.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// Convert an events file to a Chrome trace (for Perfetto) or a HAR 1.2 log,
    /// without a window.
    Export {
        /// The events file (JSON Lines).
        input: PathBuf,
        /// Where to write the trace-event JSON.
        #[arg(long, value_name = "FILE", required_unless_present = "har")]
        trace: Option<PathBuf>,
        /// Where to write a HAR 1.2 log of the requests (the transport's, and an app's
        /// through the proxy), each entry naming its connection. Its times count from
        /// the events file's last change less its last event's time.
        #[arg(long, value_name = "FILE")]
        har: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Export { input, trace, har }) = &cli.command {
        return export(input, trace.as_deref(), har.as_deref());
    }
    if let Some(
        Command::Run {
            record: Some(file), ..
        }
        | Command::Watch {
            record: Some(file), ..
        },
    ) = &cli.command
    {
        let file = file.clone();
        // Made before the command starts: one that cannot be written runs nothing.
        let out = match std::fs::File::create(&file) {
            Ok(out) => out,
            Err(e) => return fail(&format!("cannot write {}: {e}", file.display())),
        };
        let (hub, feed) = match Hub::new(Arc::new(|| {})) {
            Ok(started) => started,
            Err(e) => return fail(&format!("cannot start: {e}")),
        };
        return match cli.command.map(|command| start(&hub, command, true)) {
            Some(Ok(Some(source))) => record(&file, out, &hub, &feed, source),
            Some(Err(e)) => fail(&e),
            _ => ExitCode::SUCCESS,
        };
    }
    let context: Arc<OnceLock<egui::Context>> = Arc::default();
    let wake = {
        let context = Arc::clone(&context);
        Arc::new(move || {
            if let Some(ctx) = context.get() {
                ctx.request_repaint();
            }
        })
    };
    let (hub, feed) = match Hub::new(wake) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("roundtrip-inspector: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let listening = if cli.no_listen {
        None
    } else {
        match hub.listen(&cli.listen) {
            Ok(addr) => {
                eprintln!("roundtrip-inspector: listening on {addr}");
                Some(addr)
            }
            Err(e) => {
                eprintln!("roundtrip-inspector: cannot listen on {}: {e}", cli.listen);
                return ExitCode::from(1);
            }
        }
    };
    if let Some(name) = &cli.demo {
        if roundtrip_demo::find(name).is_none() {
            eprintln!(
                "roundtrip-inspector: unknown scenario {name:?}; `roundtrip demo --list` shows them"
            );
            return ExitCode::from(2);
        }
        hub.run_demo(name, cli.slow);
    }
    if let Some(command) = cli.command
        && let Err(e) = start(&hub, command, false)
    {
        return fail(&e);
    }
    let mut app = InspectorApp::with_hub(hub, feed, listening);
    for path in &cli.open {
        if let Err(e) = app.open_file(path) {
            eprintln!("roundtrip-inspector: {e}");
            return ExitCode::from(1);
        }
    }
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Roundtrip inspector")
            .with_inner_size([1400.0, 900.0]),
        ..eframe::NativeOptions::default()
    };
    let ran = eframe::run_native(
        "Roundtrip inspector",
        options,
        Box::new(move |cc| {
            let _ = context.set(cc.egui_ctx.clone());
            Ok(Box::new(Window(app)))
        }),
    );
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roundtrip-inspector: cannot open a window: {e}");
            ExitCode::from(1)
        }
    }
}

/// Reports `text` as the inspector's error; exit code 1.
fn fail(text: &str) -> ExitCode {
    eprintln!("roundtrip-inspector: {text}");
    ExitCode::from(1)
}

/// Starts the source `command` asks for (`run`, `run --watch`, `watch PID`; `None` for
/// others); with `close_at_exit`, a command's proxy closes its idle connections when
/// the command exits (`--record`).
fn start(hub: &Hub, command: Command, close_at_exit: bool) -> Result<Option<SourceId>, String> {
    Ok(Some(match command {
        Command::Watch { pid, .. } => hub.watch_pid(pid),
        Command::Run {
            command,
            watch: true,
            ..
        } => hub.watch_command(command),
        Command::Run {
            command,
            mitm,
            mitm_ca,
            ..
        } => {
            let mitm = if mitm {
                let ca = Mitm::open(mitm_ca.as_deref()).map_err(|e| e.to_string())?;
                Some(Arc::new(ca))
            } else {
                None
            };
            let options = RunOptions {
                mitm,
                close_at_exit,
                ..RunOptions::default()
            };
            hub.run_command(command, options)
        }
        Command::Export { .. } => return Ok(None),
    }))
}

/// `run … --record FILE` and `watch PID --record FILE`: `source`'s events written to
/// `file` as they come, with no window; ends with the command's exit code (0 for a
/// watched PID).
fn record(
    file: &std::path::Path,
    out: std::fs::File,
    hub: &Hub,
    feed: &Receiver<Feed>,
    source: SourceId,
) -> ExitCode {
    use std::io::Write;
    let cannot_write = |e: std::io::Error| fail(&format!("cannot write {}: {e}", file.display()));
    let mut out = std::io::BufWriter::new(out);
    hub.end_on_ctrl_c(source);
    let mut events = 0usize;
    let code = loop {
        let Ok(message) = feed.recv() else {
            break 1;
        };
        match message {
            Feed::Event { event, .. } => {
                events += 1;
                // Each line whole on disk at once: a recording cut short keeps it.
                if let Err(e) = writeln!(out, "{}", event.to_json()).and_then(|()| out.flush()) {
                    return cannot_write(e);
                }
            }
            Feed::Status { text, .. } | Feed::Problem { text, .. } => {
                eprintln!("roundtrip-inspector: {text}");
            }
            Feed::Exited { source: done, code } if done == source => break code,
            Feed::Opened { .. } | Feed::Narration { .. } | Feed::Exited { .. } => {}
        }
    };
    eprintln!(
        "roundtrip-inspector: {events} events in {} (`roundtrip-inspector --open {}` shows them)",
        file.display(),
        file.display()
    );
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The app inside eframe.
struct Window(InspectorApp);

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.show(ui);
    }
}

fn export(
    input: &std::path::Path,
    trace: Option<&std::path::Path>,
    har: Option<&std::path::Path>,
) -> ExitCode {
    let file = match read_jsonl(input) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("roundtrip-inspector: cannot read {}: {e}", input.display());
            return ExitCode::from(1);
        }
    };
    for problem in &file.problems {
        eprintln!("roundtrip-inspector: {}: {problem}", input.display());
    }
    let view = View::of(&file.events);
    let cannot = |path: &std::path::Path, e: std::io::Error| {
        eprintln!("roundtrip-inspector: cannot write {}: {e}", path.display());
        ExitCode::from(1)
    };
    if let Some(trace) = trace {
        let title = input.display().to_string();
        if let Err(e) = roundtrip_inspector::export::write_chrome_trace(trace, &view, &title) {
            return cannot(trace, e);
        }
        eprintln!(
            "roundtrip-inspector: wrote {} ({} connections, {} events)",
            trace.display(),
            view.lanes.len(),
            file.events.len()
        );
    }
    if let Some(har) = har {
        // The events' zero on the wall clock: the file was last written at its last
        // event.
        let written = std::fs::metadata(input)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| std::time::SystemTime::now());
        let started = roundtrip_inspector::export::wall_zero(&file.events, written);
        if let Err(e) = roundtrip_inspector::export::write_har(har, &view, started) {
            return cannot(har, e);
        }
        eprintln!(
            "roundtrip-inspector: wrote {} ({} requests)",
            har.display(),
            view.requests.len() + view.app_requests.len()
        );
    }
    ExitCode::SUCCESS
}
