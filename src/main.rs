//! The `weir` command: parse the command line, load the config, run, and map
//! errors to an exit code in one place.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

const EXAMPLES: &str = "\
Examples:
  weir run                            run on /etc/weir/weir.toml, or the built-in default if it is absent
  weir run --config ./weir.toml       run on another config
  weir check-config                   validate /etc/weir/weir.toml and print the effective config
  weir check-config -c ./weir.toml    validate another file (exit 1 and every problem if invalid)
  weir reload                         make the running weir re-read its config (same as SIGHUP,
                                      or `systemctl reload weir`); an invalid config is refused
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
    /// Run the agent until SIGTERM or SIGINT (a second signal exits at once);
    /// SIGHUP re-reads the config.
    Run {
        /// Config file [default: /etc/weir/weir.toml, else the built-in default]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Where to write weir's pid, for `weir reload`; not writable is a warning
        #[arg(long, default_value = weir::reload::DEFAULT_PID_FILE)]
        pid_file: PathBuf,
    },
    /// Validate a config and print the effective config, or every problem (exit 1).
    CheckConfig {
        /// Config file [default: /etc/weir/weir.toml, else the built-in default]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Print nothing when valid (the effective config may hold credentials)
        #[arg(short, long)]
        quiet: bool,
    },
    /// Scrub lines from FILES (or stdin) as the agent would and print them:
    /// check the `[scrub]` section before trusting it. Pseudonyms use a key
    /// made for this run.
    Scrub {
        /// Config whose `[scrub]` section is used [default: the built-in defaults]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// After each line, print every rewrite: pass, byte span, kind, rule
        /// and the bytes rewritten
        #[arg(long)]
        explain: bool,
        /// Files to read; none or `-` reads stdin
        files: Vec<PathBuf>,
    },
    /// Ask the running weir to re-read its config (sends it SIGHUP); the outcome is in its log.
    Reload {
        /// The pid file `weir run` wrote
        #[arg(long, default_value = weir::reload::DEFAULT_PID_FILE)]
        pid_file: PathBuf,
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
        Command::Run { config, pid_file } => run(config, &pid_file),
        Command::CheckConfig { config, quiet } => check_config(config, quiet),
        Command::Reload { pid_file } => reload(&pid_file),
        Command::Scrub {
            config,
            explain,
            files,
        } => weir::scrub::cli::run(&weir::scrub::cli::Options {
            config,
            explain,
            files,
        }),
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

fn check_config(path: Option<PathBuf>, quiet: bool) -> anyhow::Result<()> {
    let (config, origin) = weir::config::load(path.as_deref())?;
    if quiet {
        return Ok(());
    }
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

fn reload(pid_file: &Path) -> anyhow::Result<()> {
    let pid = weir::reload::signal_running(pid_file)?;
    println!("weir: asked process {pid} to reload its config; see its log for the outcome");
    Ok(())
}

fn run(path: Option<PathBuf>, pid_file: &Path) -> anyhow::Result<()> {
    let log = weir::selflog::init(weir::selflog::Output::detect());
    let (config, origin) = weir::config::load(path.as_deref())?;
    tracing::info!(config = %origin, version = env!("CARGO_PKG_VERSION"), "starting");
    // Before the pid file: a second weir on the same state directory must
    // stop without touching the first one's pid file.
    let state_lock = weir::pipeline::lock_state_dir(&config)?;
    let _pid_file = match weir::reload::PidFile::write(pid_file) {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %pid_file.display(), error = %e, "cannot write the pid file; `weir reload` will not find this process (SIGHUP still works)");
            None
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir")
        .build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let (trigger, reloads) = weir::reload::channel(path);
        // Installed before anything starts: until then, SIGHUP would kill us.
        let signals = Signals::install()?;
        tokio::spawn(signals.handle(shutdown.clone(), trigger));
        weir::pipeline::run_reloadable(config, state_lock, shutdown, Some(log), Some(reloads))
            .await?;
        anyhow::Ok(())
    })?;
    Ok(())
}

/// The signals weir acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// SIGHUP asks for a reload. The first SIGTERM or SIGINT starts a
    /// graceful shutdown; a second exits at once.
    async fn handle(mut self, shutdown: CancellationToken, reload: weir::reload::Trigger) {
        let mut stops = 0;
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP received; re-reading the config");
                    reload.request();
                    continue;
                }
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
            stops += 1;
            if stops == 1 {
                tracing::info!("signal received; shutting down (send again to exit at once)");
                shutdown.cancel();
            } else {
                eprintln!("weir: second signal; exiting at once");
                std::process::exit(130);
            }
        }
    }
}
