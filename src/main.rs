//! The `weir` command: parse the command line, load the config, run, and map
//! errors to an exit code in one place.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

const EXAMPLES: &str = "\
Examples:
  weir run                            run on /etc/weir/weir.toml, or the built-in default if it is absent
  weir run --config ./weir.toml       run on another config
  weir check-config                   validate /etc/weir/weir.toml and print the effective config
  weir check-config -c ./weir.toml    validate another file (exit 1 and every problem if invalid)
  weir reload                         make the running weir re-read its config (like SIGHUP, or
                                      `systemctl reload weir`) and wait for its verdict: exit 1 and
                                      every problem when it refused the file
  weir tap -s docker -l app=shop      live events of one app, after scrubbing (-f ndjson for JSON)
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
        /// Where to serve `weir tap` viewers (a unix socket, mode 0600)
        /// [default: tap.sock next to the pid file, /run/weir/tap.sock]
        #[arg(long)]
        tap_socket: Option<PathBuf>,
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
    /// Ask the running weir to re-read its config (sends it SIGHUP) and wait
    /// for its verdict: exit 0 when it runs on the new config, 1 with every
    /// problem when it refused it (it then keeps running on the previous one).
    Reload {
        /// The pid file `weir run` wrote (its verdicts are written next to it)
        #[arg(long, default_value = weir::reload::DEFAULT_PID_FILE)]
        pid_file: PathBuf,
        /// Signal this process instead of the one in the pid file (the unit
        /// passes $MAINPID)
        #[arg(long)]
        pid: Option<u32>,
        /// How long to wait for the verdict (a reload stops and restarts the
        /// pipeline)
        #[arg(long, default_value = "90s", value_parser = weir::units::HumanDuration::parse)]
        timeout: weir::units::HumanDuration,
    },
    /// Print live events from the running agent, after scrubbing, as they
    /// enter the spool; runs until interrupted. A viewer too slow to keep up
    /// loses events (counted on stderr); the pipeline is never slowed.
    Tap {
        /// Only events of this source (a name under [sources]); repeatable
        #[arg(short, long = "source")]
        sources: Vec<String>,
        /// Only events with this label value, e.g. app=shop or level=err; repeatable
        #[arg(short, long = "label", value_parser = label_filter)]
        labels: Vec<(String, String)>,
        /// ndjson: the file sink's JSON lines; compact: `TIME LABELS: MESSAGE`
        #[arg(short, long, value_enum, default_value = "compact")]
        format: weir::tap::Format,
        /// Exit after this many events
        #[arg(short = 'n', long)]
        count: Option<u64>,
        /// The socket `weir run --tap-socket` serves
        #[arg(long, default_value = weir::tap::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print the shell completion script for bash, zsh or fish (the package
    /// installs them; e.g. `weir completions bash > ~/.local/share/bash-completion/completions/weir`)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Summarize the running agent from its metrics endpoint: rates, lag,
    /// spool use, drops and errors by reason. Exits 1 when unhealthy:
    /// unreachable, /health or /ready failing, a lagging sink with no
    /// success for --stall-after, or events dropped during the check. A config
    /// file on disk that a reload would refuse is a warning line, not unhealthy.
    Status {
        /// Config whose `metrics.listen` names the endpoint [default: as `run`]
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// The endpoint to ask instead: host:port or unix:///path
        #[arg(short, long)]
        address: Option<String>,
        /// A sink that lags and has not delivered for this long is unhealthy
        #[arg(long, default_value = "5m", value_parser = weir::units::HumanDuration::parse)]
        stall_after: weir::units::HumanDuration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            pid_file,
            tap_socket,
        } => {
            let tap_socket = tap_socket.unwrap_or_else(|| pid_file.with_file_name("tap.sock"));
            run(config, &pid_file, &tap_socket)
        }
        Command::Tap {
            sources,
            labels,
            format,
            count,
            socket,
        } => {
            let filter = weir::tap::Filter { sources, labels };
            weir::tap::view(
                &socket,
                &filter,
                format,
                count,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr(),
            )
            .map_err(anyhow::Error::from)
        }
        Command::CheckConfig { config, quiet } => check_config(config, quiet),
        Command::Reload {
            pid_file,
            pid,
            timeout,
        } => reload(&pid_file, pid, timeout.get()),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "weir", &mut std::io::stdout());
            Ok(())
        }
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
    let (address, warning) = match status_address(config, address) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("weir status: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut options = weir::status::Options::new(address);
    options.stall_after = stall_after;
    let report = weir::status::run(&options);
    if let Some(warning) = &warning {
        println!("{warning}");
    }
    print!("{}", report.render());
    if report.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--address`, else the config's `metrics.listen`; and a warning when the
/// config on disk is invalid (the running agent is still on the one it
/// loaded, so that is no reason to call it unhealthy).
fn status_address(
    config: Option<PathBuf>,
    address: Option<String>,
) -> anyhow::Result<(weir::metrics::http::Address, Option<String>)> {
    let (listen, warning) = match address {
        Some(a) => (a, None),
        None => match weir::config::load(config.as_deref()) {
            Ok((config, origin)) => (
                config.metrics.listen.ok_or_else(|| {
                    anyhow::anyhow!("the metrics endpoint is off in {origin} (metrics.listen = \"\"); turn it on or pass --address")
                })?,
                None,
            ),
            Err(e) => {
                let listen = weir::config::lenient_string(config.as_deref(), "metrics.listen")
                    .unwrap_or_else(|| weir::metrics::DEFAULT_LISTEN.to_owned());
                let warning = format!(
                    "WARNING: the config on disk is invalid; a reload would be refused (the running agent keeps its config). {e}"
                );
                (listen, Some(warning))
            }
        },
    };
    let address = weir::metrics::http::Address::parse(&listen)
        .map_err(|e| anyhow::anyhow!("address {listen:?}: {e}"))?;
    Ok((address, warning))
}

fn reload(pid_file: &Path, pid: Option<u32>, wait: std::time::Duration) -> anyhow::Result<()> {
    let pid = match pid {
        Some(pid) => pid,
        None => weir::reload::running_pid(pid_file)?,
    };
    let verdict = weir::reload::reload_and_wait(pid, pid_file, wait)?;
    if verdict.accepted {
        println!("weir: process {pid}: {}", verdict.message);
        Ok(())
    } else {
        anyhow::bail!(
            "process {pid} refused the reload and keeps running on its previous config:\n{}",
            verdict.message
        )
    }
}

/// `name=value` for `weir tap --label`.
fn label_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "`{s}`: expected NAME=VALUE with NAME one of host, source, app, service, container_name, unit, level"
        )),
    }
}

/// Warns when the open-file limit cannot hold every connection the forward
/// sources accept (`max_connections`) plus weir's own files.
fn check_open_files(config: &weir::Config) {
    let connections: u64 = config
        .sources
        .values()
        .map(|s| match s {
            weir::source::Config::Forward(f) => u64::from(f.max_connections),
            _ => 0,
        })
        .sum();
    let needed = connections + 256;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    if let Some(limit) = limit.filter(|&l| l < needed) {
        tracing::warn!(limit, needed, "the open-file limit is below max_connections + 256: connections beyond it fail with EMFILE; raise LimitNOFILE (systemctl edit weir) or ulimit -n");
    }
}

fn run(path: Option<PathBuf>, pid_file: &Path, tap_socket: &Path) -> anyhow::Result<()> {
    let log = weir::selflog::init(weir::selflog::Output::detect());
    let (config, origin) = weir::config::load(path.as_deref())?;
    tracing::info!(config = %origin, version = env!("CARGO_PKG_VERSION"), "starting");
    check_open_files(&config);
    // Before the pid file: a second weir on the same state directory must
    // stop without touching the first one's pid file.
    let state_lock = weir::pipeline::lock_state_dir(&config)?;
    let pid_guard = match weir::reload::PidFile::write(pid_file) {
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
        let verdicts = pid_guard
            .as_ref()
            .map(|_| weir::reload::verdict_path(pid_file));
        let (trigger, reloads) = weir::reload::channel(path, verdicts);
        // Installed before anything starts: until then, SIGHUP would kill us.
        let signals = Signals::install()?;
        tokio::spawn(signals.handle(shutdown.clone(), trigger));
        weir::pipeline::run_reloadable(
            config,
            state_lock,
            shutdown,
            Some(log),
            Some(reloads),
            Some(tap_socket),
            &weir::metrics::Metrics::new(),
        )
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
