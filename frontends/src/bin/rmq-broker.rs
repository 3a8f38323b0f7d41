//! `rmq-broker [-c FILE] [-n ADDR] [-p | -m] [key=value ...]`: the broker.
//!
//! Settings: defaults, then the property file, then `-n` (namesrvAddr),
//! then `key=value` overrides (later wins). `-p` prints the effective
//! configuration and exits, like `mqbroker -p`; `-m` only its important
//! keys, like `mqbroker -m`. mqbroker's long option names are accepted.
//!
//! With no name server anywhere (no `-n`, no `namesrvAddr`, no
//! `NAMESRV_ADDR`) an embedded name server is started on 127.0.0.1:9876 and
//! brokerIP1 defaults to 127.0.0.1, so a single-machine setup works out of
//! the box. Once serving, one line containing `rmq-broker ready` and
//! `listening on 127.0.0.1:PORT` is printed on stdout. SIGINT/SIGTERM stop
//! cleanly (unregister, flush, checkpoint, abort file removed), exit 0.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use frontends::broker::{Broker, BrokerSettings};
use frontends::cli::{shown_addr, StopSignals};
use frontends::namesrv::NameServer;

#[derive(Parser, Debug)]
#[command(name = "rmq-broker", about = "RocketMQ 4.x-compatible broker")]
struct Args {
    /// Property file (broker.conf).
    #[arg(short = 'c', long = "config", visible_alias = "configFile")]
    config: Option<PathBuf>,
    /// Name server address(es), `host:port;host:port`.
    #[arg(short = 'n', long = "namesrvAddr")]
    namesrv: Option<String>,
    /// Print the effective configuration and exit.
    #[arg(short = 'p', long = "print-config", visible_alias = "printConfigItem")]
    print_config: bool,
    /// Print the important part of the effective configuration and exit.
    #[arg(
        short = 'm',
        long = "print-important-config",
        visible_alias = "printImportantConfig"
    )]
    print_important_config: bool,
    /// Overrides, `key=value`.
    overrides: Vec<String>,
}

/// The request path allocates small header strings per message; mimalloc
/// halves what glibc malloc costs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    frontends::cli::init_logging();
    frontends::cli::exit_code("rmq-broker", run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut overrides = Vec::new();
    if let Some(n) = &args.namesrv {
        overrides.push(format!("namesrvAddr={n}"));
    }
    overrides.extend(args.overrides.iter().cloned());
    let mut settings = BrokerSettings::load(args.config.as_deref(), &overrides)?;
    let embedded_namesrv = settings.broker.namesrv_addrs().is_empty();
    if embedded_namesrv {
        settings.broker.namesrv_addr = Some("127.0.0.1:9876".to_string());
        if settings.broker.broker_ip1.is_none() {
            settings.broker.broker_ip1 = Some("127.0.0.1".to_string());
        }
    }
    if args.print_config {
        print!("{}", settings.render());
        return Ok(());
    }
    if args.print_important_config {
        print!("{}", settings.render_important());
        return Ok(());
    }
    eprintln!(
        "rmq-broker: store at {}",
        settings.store.store_path_root_dir.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = StopSignals::install()?;
        let namesrv = if embedded_namesrv {
            let ns = NameServer::start("127.0.0.1:9876").await?;
            tracing::info!(addr = %ns.local_addr(), "embedded name server started");
            Some(ns)
        } else {
            None
        };
        let handle = Broker::start(settings).await?;
        let shown = shown_addr(handle.local_addr());
        let mut out = std::io::stdout();
        writeln!(
            out,
            "rmq-broker ready: {} listening on {shown} (fast port {})",
            handle.broker().config.broker_name,
            handle.fast_addr().port()
        )?;
        out.flush()?;
        stop.wait().await;
        handle.shutdown().await;
        if let Some(ns) = namesrv {
            ns.shutdown().await;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
