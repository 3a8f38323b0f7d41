//! `rmq-namesrv [-c FILE] [key=value ...]`: the name server.
//!
//! Settings come from the property file, then from `key=value` arguments
//! (later wins). Prints `listening on HOST:PORT` on stdout once bound (so a
//! test can start it with `listenPort=0` and read the port), and stops
//! cleanly on SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use engine::config::{apply_properties, render, Properties};
use frontends::namesrv::{KvConfig, NameServer, NamesrvConfig};

#[derive(Parser, Debug)]
#[command(name = "rmq-namesrv", about = "RocketMQ-compatible name server")]
struct Args {
    /// Property file (namesrv.conf).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(short = 'p', long = "print-config")]
    print_config: bool,
    /// Overrides, `key=value`.
    overrides: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmq-namesrv: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut props = match &args.config {
        Some(path) => Properties::load(path)?,
        None => Properties::default(),
    };
    props.extend(Properties::from_args(&args.overrides)?);
    let mut config = NamesrvConfig::default();
    apply_properties(&props, &mut [&mut config])?;
    if args.print_config {
        print!("{}", render(&[&config]));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Handlers first, so a signal right after the banner is not fatal.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let bind = format!("{}:{}", config.listen_addr, config.listen_port);
        let kv = KvConfig::load(&config.kv_config_path);
        let ns = NameServer::start_with(&bind, &config, kv).await?;
        let mut shown = ns.local_addr();
        if shown.ip().is_unspecified() {
            shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let mut out = std::io::stdout();
        writeln!(out, "listening on {shown}")?;
        out.flush()?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received, shutting down");
        ns.shutdown().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
