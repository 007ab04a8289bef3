//! `roundtrip-inspector`: the desktop app.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::{Parser, Subcommand};
use roundtrip_inspector::InspectorApp;
use roundtrip_inspector::model::View;
use roundtrip_inspector::sources::{Hub, RunOptions, read_jsonl};
use roundtrip_proxy::Mitm;

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
        /// No proxy: draw CMD's (and its children's) TCP connections from the kernel's
        /// socket table — any protocol, for programs that ignore HTTP_PROXY; no URLs.
        #[arg(long, conflicts_with = "mitm")]
        watch: bool,
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Draw the TCP connections of running process PID and its children from the
    /// kernel's socket table (connections, peers, bytes; no URLs).
    Watch {
        #[arg(value_name = "PID")]
        pid: u32,
    },
    /// Convert an events file to a Chrome trace (for Perfetto), without a window.
    Export {
        /// The events file (JSON Lines).
        input: PathBuf,
        /// Where to write the trace-event JSON.
        #[arg(long, value_name = "FILE")]
        trace: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Export { input, trace }) = &cli.command {
        return export(input, trace);
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
    if let Some(Command::Watch { pid }) = cli.command {
        hub.watch_pid(pid);
    }
    if let Some(Command::Run { command, watch, .. }) = &cli.command
        && *watch
    {
        hub.watch_command(command.clone());
    } else if let Some(Command::Run {
        command,
        mitm,
        mitm_ca,
        ..
    }) = cli.command
    {
        let mitm = if mitm {
            match Mitm::open(mitm_ca.as_deref()) {
                Ok(mitm) => Some(Arc::new(mitm)),
                Err(e) => {
                    eprintln!("roundtrip-inspector: {e}");
                    return ExitCode::from(1);
                }
            }
        } else {
            None
        };
        hub.run_command(
            command,
            RunOptions {
                mitm,
                ..RunOptions::default()
            },
        );
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

/// The app inside eframe.
struct Window(InspectorApp);

impl eframe::App for Window {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.0.show(ui);
    }
}

fn export(input: &std::path::Path, trace: &std::path::Path) -> ExitCode {
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
    let title = input.display().to_string();
    match roundtrip_inspector::export::write_chrome_trace(trace, &view, &title) {
        Ok(()) => {
            eprintln!(
                "roundtrip-inspector: wrote {} ({} connections, {} events)",
                trace.display(),
                view.lanes.len(),
                file.events.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roundtrip-inspector: cannot write {}: {e}", trace.display());
            ExitCode::from(1)
        }
    }
}
