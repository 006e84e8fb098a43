//! The `weir` command: parse the command line, load the config, run, and map
//! errors to an exit code in one place.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

const EXAMPLES: &str = "\
Examples:
  weir run                            run on /etc/weir/weir.toml, or the built-in default if it is absent
  weir run --config ./weir.toml       run on another config
  weir check-config                   validate /etc/weir/weir.toml and print the effective config
  weir check-config -c ./weir.toml    validate another file (exit 1 and every problem if invalid)
  weir status                         summary of the running agent (exit 1 if unhealthy)
  weir status --address unix:///run/weir/metrics.sock";

/// Host log agent: Docker (fluentd driver) and the systemd journal, scrubbed,
/// spooled to disk, forwarded to Loki or GELF.
#[derive(Parser)]
#[command(version, about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent until SIGTERM or SIGINT (a second signal exits at once).
    Run {
        /// Config file [default: /etc/weir/weir.toml, else the built-in default]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate a config and print the effective config, or every problem (exit 1).
    CheckConfig {
        /// Config file [default: /etc/weir/weir.toml, else the built-in default]
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Summarize the running agent from its metrics endpoint: rates, lag,
    /// spool use, drops and errors by reason. Exits 1 when unhealthy:
    /// unreachable, /health or /ready failing, a lagging sink with no
    /// success for --stall-after, or events dropped during the check.
    Status {
        /// Config whose `metrics.listen` names the endpoint [default: as `run`]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The endpoint to ask instead: host:port or unix:///path
        #[arg(short, long)]
        address: Option<String>,
        /// A sink that lags and has not delivered for this long is unhealthy
        #[arg(long, default_value = "5m", value_parser = weir::config::HumanDuration::parse)]
        stall_after: weir::config::HumanDuration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { config } => check_config(config),
        Command::Status {
            config,
            address,
            stall_after,
        } => return status(config, address, stall_after.get()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<()> {
    let (config, origin) = weir::config::load(path.as_deref())?;
    println!("# effective config from {origin}");
    print!("{}", toml::to_string_pretty(&config)?);
    Ok(())
}

fn status(
    config: Option<PathBuf>,
    address: Option<String>,
    stall_after: std::time::Duration,
) -> ExitCode {
    let address = match status_address(config, address) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weir status: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = weir::status::Options::new(address);
    options.stall_after = stall_after;
    let report = weir::status::run(&options);
    print!("{}", report.render());
    if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--address`, else the config's `metrics.listen`.
fn status_address(
    config: Option<PathBuf>,
    address: Option<String>,
) -> anyhow::Result<weir::metrics::http::Address> {
    let listen = match address {
        Some(a) => a,
        None => {
            let (config, origin) = weir::config::load(config.as_deref())?;
            config.metrics.listen.ok_or_else(|| {
                anyhow::anyhow!("the metrics endpoint is off in {origin} (metrics.listen = \"\"); turn it on or pass --address")
            })?
        }
    };
    weir::metrics::http::Address::parse(&listen)
        .map_err(|e| anyhow::anyhow!("address {listen:?}: {e}"))
}

fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let log = weir::selflog::init(weir::selflog::Output::detect());
    let (config, origin) = weir::config::load(path.as_deref())?;
    tracing::info!(config = %origin, version = env!("CARGO_PKG_VERSION"), "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        weir::run(config, shutdown, Some(log)).await
    })?;
    Ok(())
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second exits at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop weir with SIGKILL");
        return;
    };
    for n in 0.. {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if n == 0 {
            tracing::info!("signal received; shutting down (send again to exit at once)");
            shutdown.cancel();
        } else {
            eprintln!("weir: second signal; exiting at once");
            std::process::exit(130);
        }
    }
}
