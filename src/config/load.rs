//! From files to one TOML table: the main file, then its drop-ins
//! (`conf.d/*.toml` next to it, in name order), each parsed, with `${VAR}`
//! expanded in its strings and every secret `X_file` replaced by the file's
//! content, then merged. Every key keeps the file and line it was written
//! at, so that a problem found later, at any depth, points there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::problems::Problem;
use crate::secret;

/// One config text and where it came from.
pub struct Text {
    /// Shown in problems: the path, or "built-in default config".
    pub name: String,
    pub text: String,
}

/// Where each dotted key (`sinks.loki.password`) was last written.
#[derive(Default)]
pub struct Lines(HashMap<String, (String, usize)>);

impl Lines {
    /// The file and line of `key`, or of its nearest parent written somewhere
    /// (a default or a key inside an array has no line of its own).
    pub fn find(&self, key: &str) -> Option<&(String, usize)> {
        let mut k = key;
        loop {
            if let Some(at) = self.0.get(k) {
                return Some(at);
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }

    /// Fills in the file and line of `p` from its key, where known.
    pub fn place(&self, p: &mut Problem) {
        if let Some((file, line)) = self.find(&p.key) {
            p.file.get_or_insert_with(|| file.clone());
            p.line.get_or_insert(*line);
        }
    }
}

/// The drop-in files of a main config file: `conf.d/*.toml` in its
/// directory, by name. A missing directory means none.
pub fn dropins(main: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = main
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("conf.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        // Editors' backups (`x.toml~`, `.x.toml.swp`) are not `*.toml`.
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if is_toml && !hidden {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Parses, expands and merges `texts` in order (later keys win; tables merge
/// key by key). Problems of every file are returned together; the table is
/// then incomplete and only good for finding more problems.
pub fn merge(texts: &[Text], problems: &mut Vec<Problem>) -> (toml::Table, Lines) {
    let mut merged = toml::Table::new();
    let mut lines = Lines::default();
    for t in texts {
        let mut table = match toml::from_str::<toml::Table>(&t.text) {
            Ok(table) => table,
            Err(e) => {
                problems.push(syntax_problem(t, &e));
                continue;
            }
        };
        // toml (the crate) keeps no positions in a Table: toml_edit does.
        if let Ok(doc) = toml_edit::ImDocument::parse(t.text.as_str()) {
            record_lines(&t.text, &t.name, doc.as_table(), "", &mut lines);
        }
        let mut file_problems = Vec::new();
        expand(&mut table, "", &mut file_problems);
        for mut p in file_problems {
            p.file = Some(t.name.clone());
            p.line = lines.find(&p.key).map(|at| at.1);
            problems.push(p);
        }
        merge_into(&mut merged, table);
    }
    (merged, lines)
}

fn syntax_problem(t: &Text, e: &toml::de::Error) -> Problem {
    let line = e.span().map(|s| line_of_offset(&t.text, s.start));
    let written = line
        .and_then(|l| t.text.lines().nth(l - 1))
        .unwrap_or_default();
    let mut message = e.message().trim().to_owned();
    // `socket_mode = 0600`: TOML has no leading-zero numbers.
    let value = written.split_once('=').map(|(_, v)| v.trim());
    if value
        .is_some_and(|v| v.len() > 1 && v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()))
    {
        message
            .push_str("; TOML numbers cannot start with 0: write modes as a string, e.g. \"0600\"");
    }
    Problem {
        file: Some(t.name.clone()),
        key: line
            .and_then(|l| key_on_line(&t.text, l))
            .unwrap_or_else(|| "(syntax)".into()),
        line,
        message,
    }
}

/// The dotted key written on 1-based `line` (`key = ...` under the nearest
/// `[table]` header above it), for a syntax error the parser cannot name.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (k, _) = lines.get(line - 1)?.split_once('=')?;
    let k = k.trim().trim_matches('"');
    if k.is_empty() || k.contains(['[', ' ']) {
        return None;
    }
    let header = lines[..line - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(['[', ']']).trim().to_owned())
    });
    Some(match header {
        Some(h) => format!("{h}.{k}"),
        None => k.to_owned(),
    })
}

fn record_lines(
    text: &str,
    file: &str,
    table: &dyn toml_edit::TableLike,
    prefix: &str,
    lines: &mut Lines,
) {
    for (k, item) in table.iter() {
        let path = if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        };
        let span = table
            .get_key_value(k)
            .and_then(|(key, _)| key.span())
            .or_else(|| item.span());
        if let Some(span) = span {
            let line = line_of_offset(text, span.start);
            lines.0.insert(path.clone(), (file.to_owned(), line));
        }
        if let Some(sub) = item.as_table_like() {
            record_lines(text, file, sub, &path, lines);
        }
    }
}

pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Expands `${VAR}` in every string, then replaces every `<secret>_file` key
/// by `<secret>` with that file's content.
fn expand(table: &mut toml::Table, prefix: &str, problems: &mut Vec<Problem>) {
    let keys: Vec<String> = table.keys().cloned().collect();
    for k in keys {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = table.get_mut(&k).expect("key just listed");
        expand_value(value, &path, problems);
        let Some(secret_key) = k.strip_suffix("_file") else {
            continue;
        };
        if !secret::KEYS.contains(&secret_key) {
            continue;
        }
        let value = table.remove(&k).expect("key just listed");
        if table.contains_key(secret_key) {
            problems.push(problem(
                &path,
                format!("give either `{secret_key}` or `{k}`, not both"),
            ));
            continue;
        }
        match read_secret(&value) {
            Ok(s) => {
                table.insert(secret_key.to_owned(), toml::Value::String(s));
            }
            Err(why) => problems.push(problem(&path, why)),
        }
    }
}

fn expand_value(value: &mut toml::Value, path: &str, problems: &mut Vec<Problem>) {
    match value {
        toml::Value::String(s) => match expand_vars(s, |name| std::env::var(name).ok()) {
            Ok(expanded) => *s = expanded,
            Err(why) => problems.push(problem(path, why)),
        },
        toml::Value::Table(t) => expand(t, path, problems),
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// `${NAME}` is the variable's value (unset is an error, so that a typo does
/// not become an empty password); `$${` is a literal `${`. Nothing else is
/// special, so a `$` in a regular expression needs no escaping.
pub fn expand_vars(s: &str, var: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains("${") {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            return Err("`${` without a closing `}`; write `$${` for a literal `${`".into());
        };
        let name = &rest[at + 2..at + end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not an environment variable name (letters, digits, `_`)"
            ));
        }
        match var(name) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(format!(
                    "environment variable {name} is not set (set it in weir's environment, \
                     e.g. `Environment=` in a systemd drop-in, or write `$${{` for a literal `${{`)"
                ))
            }
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn read_secret(value: &toml::Value) -> Result<String, String> {
    let Some(path) = value.as_str() else {
        return Err("must be a path (a string)".into());
    };
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(format!(
            "{path:?} must be an absolute path, e.g. \"${{CREDENTIALS_DIRECTORY}}/loki-password\""
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e}; it must be readable by the user weir runs as",
            path.display()
        )
    })?;
    // `echo secret > file` adds a newline that is not part of the secret.
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text.to_owned())
}

fn problem(key: &str, message: impl Into<String>) -> Problem {
    Problem {
        file: None,
        key: key.to_owned(),
        line: None,
        message: message.into(),
    }
}

/// Tables merge key by key; any other value replaces the earlier one.
fn merge_into(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge_into(old, new),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "t0k".to_owned())
    }

    #[test]
    fn vars_expand_and_escape() {
        assert_eq!(expand_vars("a${TOKEN}b", env).unwrap(), "at0kb");
        assert_eq!(expand_vars("$${TOKEN}", env).unwrap(), "${TOKEN}");
        assert_eq!(expand_vars("^a$|x$", env).unwrap(), "^a$|x$");
        assert!(expand_vars("${NOPE}", env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand_vars("${TOKEN", env).unwrap_err().contains("closing"));
        assert!(expand_vars("${A-B}", env)
            .unwrap_err()
            .contains("not an environment"));
    }

    #[test]
    fn key_of_a_syntax_error_line() {
        let text = "a = 1\n[sources.d]\ntype = \"forward\"\nsocket_mode = 0600\n";
        assert_eq!(
            key_on_line(text, 4).as_deref(),
            Some("sources.d.socket_mode")
        );
        assert_eq!(key_on_line(text, 1).as_deref(), Some("a"));
    }

    #[test]
    fn tables_merge_and_values_replace() {
        let mut a: toml::Table = toml::from_str("x = 1\n[t]\na = 1\nb = 2\n").unwrap();
        let b: toml::Table = toml::from_str("x = 2\n[t]\nb = 3\n").unwrap();
        merge_into(&mut a, b);
        assert_eq!(a.to_string(), "x = 2\n\n[t]\na = 1\nb = 3\n");
    }
}
