//! The `tenantctl` binary: parses the command line, runs the command, prints `error:`/`hint:` lines and
//! maps the outcome to the documented exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::args::Cli::parse();
    let filter = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        // An idle pooled connection closed by a stopping cluster is not worth a warning; real
        // connection failures surface as request or command errors.
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TENANTCTL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_ansi(color)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(cli::commands::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let text = format!("{err:#}");
            let red = console::style("error").red().bold();
            eprintln!("{red}: {text}");
            ExitCode::from(2)
        }
    }
}
