//! `[scrub]` through the real binary: defaults when absent, problems reported
//! with their key and line.

use std::process::Command;

use crate::common::weir_bin;

fn check_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let base = "state_dir = \"/var/lib/weir\"\n[sources.d]\ntype = \"forward\"\nlisten = \"unix:///run/weir/f.sock\"\n[sinks.f]\ntype = \"file\"\npath = \"/var/log/weir/e.ndjson\"\n";
    std::fs::write(&path, format!("{base}{text}")).unwrap();
    Command::new(weir_bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap()
}

#[test]
fn absent_scrub_section_means_private_defaults() {
    let out = check_config("");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ipv4 = \"truncate\"",
        "ipv6 = \"truncate\"",
        "logins = \"hash\"",
        "ipv4_prefix = 24",
        "ipv6_prefix = 48",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
}

#[test]
fn bad_scrub_settings_are_reported_with_their_line() {
    let out = check_config("[scrub]\nlogins = \"truncate\"\nipv6_prefix = 200\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 9: `scrub.logins`"), "{err}");
    assert!(err.contains("line 10: `scrub.ipv6_prefix`"), "{err}");

    let out = check_config("[scrub]\nipv4 = \"off\"\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scrub.ipv4") && err.contains("truncate"),
        "{err}"
    );

    let out = check_config("[scrub]\nlogin = \"hash\"\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `login`"), "{err}");
}

/// Runs `weir scrub` (with `args`) on `input`; its stdout.
fn weir_scrub(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(weir_bin())
        .arg("scrub")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "weir scrub failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// One line of the corpus (see tests/corpus/scrub/README.md).
struct Case {
    program: String,
    file: String,
    input: String,
    want: String,
    /// The original text of each marked span.
    marked: Vec<String>,
    /// The text between the marks, in order.
    kept: Vec<String>,
}

fn parse_case(program: &str, file: &str, line: &str) -> Case {
    let (mut input, mut want) = (String::new(), String::new());
    let (mut marked, mut kept) = (Vec::new(), Vec::new());
    let mut rest = line;
    while let Some(open) = rest.find('⟦') {
        let plain = &rest[..open];
        input.push_str(plain);
        want.push_str(plain);
        kept.push(plain.to_owned());
        let after = &rest[open + '⟦'.len_utf8()..];
        let close = after.find('⟧').expect("unclosed ⟦ in the corpus");
        let mark = &after[..close];
        let (from, to) = match mark.split_once('→') {
            Some((f, t)) => (f, t),
            None => (mark, "u:#"),
        };
        input.push_str(from);
        want.push_str(to);
        marked.push(from.to_owned());
        rest = &after[close + '⟧'.len_utf8()..];
    }
    input.push_str(rest);
    want.push_str(rest);
    kept.push(rest.to_owned());
    Case {
        program: program.to_owned(),
        file: file.to_owned(),
        input,
        want,
        marked,
        kept,
    }
}

fn load_corpus() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/scrub");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut program = String::new();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(p) = line.strip_prefix("## ") {
                program = p.trim().to_owned();
            } else if !line.starts_with('#') && !line.is_empty() {
                assert!(
                    !program.is_empty(),
                    "{file}: a line before any `## PROGRAM`"
                );
                cases.push(parse_case(&program, &file, line));
            }
        }
    }
    cases
}

/// `u:` and 10 hex digits -> `u:#`, so expectations do not depend on the key.
fn normalise(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |k: usize| {
            b.get(k)
                .is_some_and(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        };
        if b[i..].starts_with(b"u:")
            && (i + 2..i + 12).all(hex)
            && !b.get(i + 12).is_some_and(u8::is_ascii_alphanumeric)
        {
            out.push_str("u:#");
            i += 12;
            continue;
        }
        let c = s[i..].chars().next().unwrap();
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// The corpus through `weir scrub` with the default `[scrub]`: every line
/// as its expectation says, counted as leaks (a marked span survives) and
/// damage (text outside the marks changed); then scrubbed again, unchanged.
#[test]
fn corpus() {
    let cases = load_corpus();
    let programs: std::collections::BTreeSet<&str> =
        cases.iter().map(|c| c.program.as_str()).collect();
    let near_misses = cases.iter().filter(|c| c.marked.is_empty()).count();
    assert!(cases.len() >= 400, "{} lines", cases.len());
    assert!(programs.len() >= 50, "{} programs", programs.len());
    assert!(near_misses * 2 >= cases.len(), "{near_misses} near-misses");
    let input: String = cases.iter().map(|c| format!("{}\n", c.input)).collect();
    let out = weir_scrub(&[], input.as_bytes());
    let out = String::from_utf8(out).expect("UTF-8 in, UTF-8 out");
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), cases.len(), "one line out per line in");
    let (mut leaks, mut damage) = (Vec::new(), Vec::new());
    for (case, got) in cases.iter().zip(&got) {
        let norm = normalise(got);
        if norm == case.want {
            continue;
        }
        let report = format!(
            "{} ({}):\n   in: {}\n want: {}\n  got: {}",
            case.program, case.file, case.input, case.want, norm
        );
        if case.marked.iter().any(|m| got.contains(m.as_str())) {
            leaks.push(report.clone());
        }
        let mut at = 0;
        let kept_in_order = case.kept.iter().all(|k| match got[at..].find(k.as_str()) {
            Some(p) => {
                at += p + k.len();
                true
            }
            None => false,
        });
        if !kept_in_order || !case.marked.iter().any(|m| got.contains(m.as_str())) {
            damage.push(report);
        }
    }
    eprintln!(
        "scrub corpus: {} lines from {} programs ({} near-misses): {} leaking, {} damaged",
        cases.len(),
        programs.len(),
        near_misses,
        leaks.len(),
        damage.len()
    );
    for r in &leaks {
        eprintln!("LEAK {r}");
    }
    for r in &damage {
        eprintln!("DAMAGE {r}");
    }
    // Idempotent: the output scrubbed again is the output.
    let again = weir_scrub(&[], out.as_bytes());
    assert_eq!(
        String::from_utf8(again).unwrap(),
        out,
        "a second scrub changed the corpus"
    );
    // No line may leak or be damaged (the ratchet reached 0 of both; the
    // test prints every failing line).
    assert!(
        leaks.is_empty() && damage.is_empty(),
        "{} leaking lines, {} damaged: see above",
        leaks.len(),
        damage.len()
    );
}

/// `--explain` names every rewrite: span, kind and rule; a config's
/// `[scrub]` is used.
#[test]
fn explain_and_config() {
    let out = weir_scrub(
        &["--explain"],
        b"Accepted publickey for alice from 203.0.113.7 port 22\nnothing here\n",
    );
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Accepted publickey for u:"), "{out}");
    assert!(lines[0].contains("from 203.0.113.0 port 22"), "{out}");
    assert_eq!(
        lines[1], "  pass 1 bytes 23..28 login [for_name] \"alice\"",
        "{out}"
    );
    assert_eq!(
        lines[2], "  pass 1 bytes 34..45 ipv4 [ipv4] \"203.0.113.7\"",
        "{out}"
    );
    assert_eq!(lines[3], "nothing here");
    assert_eq!(lines.len(), 4, "{out}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.toml");
    let base = "state_dir = \"/var/lib/weir\"\n[sources.d]\ntype = \"forward\"\nlisten = \"unix:///run/weir/f.sock\"\n[sinks.f]\ntype = \"file\"\npath = \"/var/log/weir/e.ndjson\"\n";
    std::fs::write(
        &path,
        format!(
            "{base}[scrub]\naddresses = \"all\"\nlogins = \"mask\"\nkeep_accounts = [\"deploy\"]\n"
        ),
    )
    .unwrap();
    let out = weir_scrub(
        &["--config", path.to_str().unwrap()],
        b"user=alice user=deploy from 10.1.2.3\n",
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "user=REDACTED user=deploy from 10.1.2.0\n"
    );
}
