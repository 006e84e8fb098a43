//! `weir scrub [--config FILE] [--explain] [FILES]`: the scrubber on text,
//! so a user can check it before trusting it (and a developer can see why a
//! line came out as it did).
//!
//! Reads lines from the files (or stdin, also for `-`), scrubs each as the
//! message of one event with the `[scrub]` section of the config (the
//! built-in defaults without `--config`), and writes them to stdout. The
//! hash key is made for this run, so pseudonyms differ from the running
//! agent's (and from run to run); everything else is what the agent does.
//! This host's `/etc/passwd` system accounts are kept, as by the agent.
//!
//! `--explain` prints after each line that changed, per rewrite: the pass,
//! the byte span, the kind, the rule, and the bytes rewritten (this output
//! holds the personal data it explains: it is for the user's terminal).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;

use super::{Config, Scrubber};

/// What `weir scrub` was asked.
pub struct Options {
    /// The config whose `[scrub]` is used; `None`: the built-in defaults.
    pub config: Option<PathBuf>,
    pub explain: bool,
    /// Files to read in order; empty or `-` means stdin.
    pub files: Vec<PathBuf>,
}

/// Runs `weir scrub`; an error names the file it concerns.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let key: [u8; 32] = rand::random();
    let passwd = std::fs::read_to_string("/etc/passwd").ok();
    let config = match &options.config {
        Some(path) => crate::config::load(Some(path))?.0.scrub,
        None => Config::default(),
    };
    let sc = Scrubber::with_passwd(&config, key, passwd.as_deref())?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let stdin_only = [PathBuf::from("-")];
    let files = if options.files.is_empty() {
        &stdin_only[..]
    } else {
        &options.files[..]
    };
    for path in files {
        let input: Box<dyn Read> = if path.as_os_str() == "-" {
            Box::new(io::stdin().lock())
        } else {
            Box::new(
                std::fs::File::open(path)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
            )
        };
        scrub_stream(&sc, BufReader::new(input), &mut out, options.explain, now)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    out.flush()?;
    Ok(())
}

/// Scrubs every line of `input` to `out`.
pub fn scrub_stream(
    sc: &Scrubber,
    mut input: impl BufRead,
    out: &mut impl Write,
    explain: bool,
    timestamp_ns: i64,
) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let body_len = line.len() - usize::from(line.ends_with(b"\n"));
        let body = &line[..body_len];
        if explain {
            let (text, log) = sc.explain_text(body, timestamp_ns);
            out.write_all(&text)?;
            out.write_all(b"\n")?;
            for r in &log {
                writeln!(
                    out,
                    "  pass {} bytes {}..{} {} [{}] {:?}",
                    r.pass,
                    r.start,
                    r.end,
                    r.kind,
                    r.rule,
                    String::from_utf8_lossy(&r.text)
                )?;
            }
        } else {
            out.write_all(&sc.scrub_text(body, timestamp_ns))?;
            out.write_all(&line[body_len..])?;
        }
    }
}
