//! The `tenantctl` binary: parses the command line, runs the command, prints `error:`/`hint:` lines
//! (or, with `--output json`, one JSON error object on stderr) and maps the outcome to the documented
//! exit code (`cli::exit`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are not errors; every other parse error exits 1, as any other error.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(cli::exit::OK);
        }
        Err(e) => {
            if json_requested() {
                let text = e.render().to_string();
                let text = text.trim().trim_start_matches("error: ");
                let err = anyhow::anyhow!("{text}");
                eprintln!("{}", cli::exit::error_json("usage", &err));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(cli::exit::ERROR);
        }
    };
    let json = cli.global.output == cli::args::OutputFormat::Json;
    // A server logs one access line per request (target `access`) by default; other commands only
    // what goes wrong.
    let serving = matches!(cli.command, cli::args::Command::Serve(_));
    let filter = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        // An idle pooled connection closed by a stopping cluster is not worth a warning; real
        // connection failures surface as request or command errors.
        (_, 0) if serving => "warn,access=info,deadpool.postgres=error",
        (_, 0) => "warn,deadpool.postgres=error",
        (_, 1) => "info,tenantctl=info",
        _ => "debug",
    };
    let color = match cli.global.color {
        cli::args::ColorChoice::Always => true,
        cli::args::ColorChoice::Never => false,
        cli::args::ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none()
                && console::Term::stderr().features().colors_supported()
        }
    };
    console::set_colors_enabled(color);
    console::set_colors_enabled_stderr(color);
    let filter = tracing_subscriber::EnvFilter::try_from_env("TENANTCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    // Text on a terminal by default; `TENANTCTL_LOG_FORMAT=json` for a log pipeline. Spans go to
    // OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`tenantctl serve`'s requests and model calls).
    let _tracing =
        match runtime::telemetry::LogFormat::from_env(runtime::telemetry::LogFormat::Text)
            .and_then(|format| runtime::telemetry::init(format, filter, color, "tenantctl"))
        {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(cli::exit::ERROR);
            }
        };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(cli::exit::ERROR);
        }
    };
    match runtime.block_on(cli::commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) if json => {
            eprintln!("{}", cli::exit::error_json("error", &err));
            ExitCode::from(cli::exit::ERROR)
        }
        Err(err) => {
            let text = format!("{err:#}");
            let red = console::style("error").red().bold();
            eprintln!("{red}: {text}");
            ExitCode::from(cli::exit::ERROR)
        }
    }
}

/// Whether the command line (or `TENANTCTL_OUTPUT`) asks for JSON, read without clap: for the
/// errors clap itself finds.
fn json_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let flag = args
        .windows(2)
        .any(|w| w[0] == "--output" && w[1] == "json")
        || args.iter().any(|a| a == "--output=json");
    flag || std::env::var("TENANTCTL_OUTPUT").is_ok_and(|v| v == "json")
}
