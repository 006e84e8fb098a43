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
                                      or `systemctl reload weir`); an invalid config is refused";

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
    /// Ask the running weir to re-read its config (sends it SIGHUP); the outcome is in its log.
    Reload {
        /// The pid file `weir run` wrote
        #[arg(long, default_value = weir::reload::DEFAULT_PID_FILE)]
        pid_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, pid_file } => run(config, &pid_file),
        Command::CheckConfig { config, quiet } => check_config(config, quiet),
        Command::Reload { pid_file } => reload(&pid_file),
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

fn reload(pid_file: &Path) -> anyhow::Result<()> {
    let pid = weir::reload::signal_running(pid_file)?;
    println!("weir: asked process {pid} to reload its config; see its log for the outcome");
    Ok(())
}

fn run(path: Option<PathBuf>, pid_file: &Path) -> anyhow::Result<()> {
    let log = weir::selflog::init(weir::selflog::Output::detect());
    let (config, origin) = weir::config::load(path.as_deref())?;
    tracing::info!(config = %origin, version = env!("CARGO_PKG_VERSION"), "starting");
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
        weir::pipeline::run_reloadable(config, shutdown, Some(log), Some(reloads)).await?;
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
