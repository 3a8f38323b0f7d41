//! `rmq-namesrv [-c FILE] [-p] [key=value ...]`: the name server.
//!
//! Settings come from the property file, then from `key=value` arguments
//! (later wins). mqnamesrv's long option names are accepted, and so is its
//! `-n ADDR`, which it ignores too. Prints `listening on HOST:PORT` on
//! stdout once bound (so a test can start it with `listenPort=0` and read
//! the port), and stops cleanly on SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use engine::config::{apply_properties, render, Properties};
use frontends::cli::{shown_addr, StopSignals};
use frontends::namesrv::{KvConfig, NameServer, NamesrvConfig};

#[derive(Parser, Debug)]
#[command(name = "rmq-namesrv", about = "RocketMQ-compatible name server")]
struct Args {
    /// Property file (namesrv.conf).
    #[arg(short = 'c', long = "config", visible_alias = "configFile")]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(short = 'p', long = "print-config", visible_alias = "printConfigItem")]
    print_config: bool,
    /// Accepted as mqnamesrv accepts it (its scripts pass the same options
    /// to every server); a name server has no use for it.
    #[arg(short = 'n', long = "namesrvAddr", hide = true)]
    _namesrv: Option<String>,
    /// Overrides, `key=value`.
    overrides: Vec<String>,
}

/// The request path allocates small header strings per message; mimalloc
/// halves what glibc malloc costs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    frontends::cli::init_logging();
    frontends::cli::exit_code("rmq-namesrv", run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let file_props = match &args.config {
        Some(path) => Properties::load(path)?,
        None => Properties::default(),
    };
    let arg_props = Properties::from_args(&args.overrides)?;
    let mut config = NamesrvConfig::default();
    // One after the other, so an override wins in any spelling.
    for props in [&file_props, &arg_props] {
        apply_properties(props, &mut [&mut config])?;
    }
    if args.print_config {
        print!("{}", render(&[&config]));
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = StopSignals::install()?;
        let bind = format!("{}:{}", config.listen_addr, config.listen_port);
        let kv = KvConfig::load(&config.kv_config_path);
        let ns = NameServer::start_with(&bind, &config, kv)
            .await
            .map_err(|e| format!("cannot listen on {bind} (listenAddr:listenPort): {e}"))?;
        let shown = shown_addr(ns.local_addr());
        let mut out = std::io::stdout();
        writeln!(out, "listening on {shown}")?;
        out.flush()?;
        stop.wait().await;
        ns.shutdown().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
