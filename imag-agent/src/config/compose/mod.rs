//! Compose files as the configuration: `imag-agent attach IFACE --compose FILE`.
//!
//! A compose file is read into the same raw structs as `imag.toml` (`super::raw`) and then
//! validated by the same second pass (`super::from_raw`), so both front ends yield one `Config`
//! and one host spec, with the same checks and messages. The steps: `yaml.rs` parses the file
//! into nodes that know their byte offsets; `interpolate.rs` substitutes `${VAR}`s (agent
//! environment over `.env`); `top.rs` reads the top level (the imag network, `x-imag`);
//! `service.rs` turns each service into a host, with `options.rs` for its container options;
//! `address.rs` gives addresses to services that do not name one; `words.rs` splits string
//! commands as compose does.
//!
//! Every problem, compose's own (an unknown key, a bad interpolation) or the shared validation's
//! (a bad `ipv4_address`), is placed at the line and column of the value it is about, in the
//! compose file (a problem inside a `.env` or `env_file` names that file's line too).
//!
//! The YAML crate is saphyr (0.3, with its own saphyr-parser): the maintained successor of
//! yaml-rust/yaml-rust2 by the same maintainers, YAML 1.2, no `unsafe` in its parser, a bound on
//! alias expansion ("billion laughs"), duplicate keys refused, and — what imag needs above all —
//! a marked tree whose every node, semantic problems included, has a position, with scalars kept
//! as written. `serde_yaml` is deprecated and unmaintained, `serde_yml` has soundness advisories, and
//! the serde front ends (`serde-saphyr`, `serde_norway`) place syntax errors but not the values that
//! a later check refuses. saphyr builds with the workspace's rustc 1.95 (it needs 1.85); its
//! default `encoding` feature (`encoding_rs`, for non-UTF-8 input) is left out: the file is read as
//! UTF-8.

mod address;
mod cluster;
mod interpolate;
mod options;
mod service;
#[cfg(test)]
mod tests;
mod top;
mod words;
mod yaml;

use std::{ops::Range, path::Path};

use toml::Spanned;

pub(crate) use self::interpolate::Vars;
use self::{
    interpolate::Interpolator,
    yaml::{Node, Value},
};
use super::{Config, ConfigError, LoadError, Problem, error::line_column};

/// Reads a compose file, its `.env` and the agent's environment, and validates the result.
pub(super) fn load(path: &Path) -> Result<Config, LoadError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let text = read(path)?;
    let origin = path.display().to_string();
    let dir = path.parent().unwrap_or(Path::new("."));
    let dotenv_path = dir.join(".env");
    let dotenv = if dotenv_path.exists() {
        Some(read(&dotenv_path)?)
    } else {
        None
    };
    let dotenv = dotenv.as_deref().map(|text| (dotenv_path.as_path(), text));
    Ok(parse_with_env(
        &text,
        &origin,
        std::env::vars(),
        dotenv,
        dir,
    )?)
}

/// What [`load`] does once the files are read: interpolates the `.env` text (`dotenv`, with the
/// path it names in messages) over `env`, then parses and validates `text` with the variables of
/// `env` over those of `.env`.
pub(super) fn parse_with_env(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
    dotenv: Option<(&Path, &str)>,
    dir: &Path,
) -> Result<Config, ConfigError> {
    let env = Vars(env.into_iter().collect());
    let dotenv = match dotenv {
        Some((dotenv_path, dotenv_text)) => {
            interpolate::dotenv(dotenv_text, &env).map_err(|bad| ConfigError {
                origin: origin.to_string(),
                problems: vec![Problem {
                    line: 0,
                    column: 0,
                    message: format!("{}:{}: {}", dotenv_path.display(), bad.line, bad.message),
                }],
            })?
        }
        None => Vec::new(),
    };
    let vars = Vars::new(env.0, Vars(dotenv.into_iter().collect()));
    parse(text, origin, &vars, dir)
}

/// Parses and validates compose text; `dir` is where relative paths (`env_file`) start.
pub(crate) fn parse(
    text: &str,
    origin: &str,
    vars: &Vars,
    dir: &Path,
) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        origin: origin.to_string(),
        problems,
    };
    let mut doc = yaml::parse(text).map_err(|e| {
        fail(vec![Problem {
            line: e.line,
            column: e.column,
            message: e.message,
        }])
    })?;
    let mut cx = Cx {
        problems: Vec::new(),
        warnings: Vec::new(),
        dir,
        vars,
    };
    let mut interpolator = Interpolator {
        vars,
        unset: Vec::new(),
    };
    interpolate_tree(&mut doc, &mut interpolator, &mut cx);
    for (at, name) in std::mem::take(&mut interpolator.unset) {
        cx.warn(
            at,
            format!("variable {name} is not set: an empty string is used (as compose does)"),
        );
    }
    let raw = top::config(&doc, &mut cx);
    let locate = |at: usize, message: String| {
        let (line, column) = line_column(text, at);
        Problem {
            line,
            column,
            message,
        }
    };
    let problems: Vec<Problem> = cx.problems.into_iter().map(|(a, m)| locate(a, m)).collect();
    let warnings: Vec<Problem> = cx.warnings.into_iter().map(|(a, m)| locate(a, m)).collect();
    if let Some(raw) = raw {
        super::from_raw(&raw, text, origin, problems, warnings)
    } else {
        let mut problems = problems;
        problems.sort_by_key(|p| (p.line, p.column));
        Err(fail(problems))
    }
}

/// Interpolates every scalar value (keys are left as written, as compose does).
fn interpolate_tree(node: &mut Node, interpolator: &mut Interpolator<'_>, cx: &mut Cx<'_>) {
    match &mut node.value {
        Value::Scalar(s) => {
            let noted = interpolator.unset.len();
            match interpolator.value(&s.text) {
                Ok(text) => s.text = text,
                Err(bad) => cx.problem(s.text_at + bad.offset, bad.message),
            }
            // The interpolator counts in the scalar's text; the file counts from its start.
            for (at, _) in &mut interpolator.unset[noted..] {
                *at += s.text_at;
            }
        }
        Value::Seq(items) => items
            .iter_mut()
            .for_each(|n| interpolate_tree(n, interpolator, cx)),
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|(_, n)| interpolate_tree(n, interpolator, cx)),
        Value::Null => {}
    }
}

/// What the compose passes share: problems and warnings at byte offsets, and the file's
/// surroundings.
pub(super) struct Cx<'a> {
    problems: Vec<(usize, String)>,
    warnings: Vec<(usize, String)>,
    dir: &'a Path,
    vars: &'a Vars,
}

impl Cx<'_> {
    fn problem(&mut self, at: usize, message: String) {
        self.problems.push((at, message));
    }

    fn warn(&mut self, at: usize, message: String) {
        self.warnings.push((at, message));
    }

    /// A scalar as a spanned string (numbers and booleans as written), or a problem.
    fn string(&mut self, node: &Node, what: &str) -> Option<Spanned<String>> {
        if let Some(text) = node.text() {
            Some(spanned(node.at, text.to_string()))
        } else {
            self.problem(
                node.at,
                format!("{what} must be a single value, not {}", node.kind()),
            );
            None
        }
    }

    fn boolean(&mut self, node: &Node, what: &str) -> Option<bool> {
        let value = node.boolean();
        if value.is_none() {
            self.problem(node.at, format!("{what} must be true or false"));
        }
        value
    }

    /// A list of single values (a lone value counts as a list of one when `lone` is true).
    fn strings(&mut self, node: &Node, what: &str, lone: bool) -> Option<Vec<Spanned<String>>> {
        match &node.value {
            Value::Seq(items) => items.iter().map(|i| self.string(i, what)).collect(),
            Value::Scalar(_) if lone => Some(vec![self.string(node, what)?]),
            _ => {
                self.problem(
                    node.at,
                    format!("{what} must be a list, not {}", node.kind()),
                );
                None
            }
        }
    }

    /// The entries of a mapping, or a problem.
    fn mapping<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(yaml::Key, Node)]> {
        if node.map().is_none() {
            self.problem(
                node.at,
                format!("{what} must be a mapping, not {}", node.kind()),
            );
        }
        node.map()
    }
}

/// A value at a byte offset, as the raw structs hold it (a one-byte span: only its start is
/// ever shown).
fn spanned<T>(at: usize, value: T) -> Spanned<T> {
    let range: Range<usize> = at..at + 1;
    Spanned::new(range, value)
}
