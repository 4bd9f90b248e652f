//! Variables, as compose does them: `${VAR}` and friends in every value of the file, with the
//! variables of the agent's environment over those of a `.env` file next to the compose file;
//! and the dotenv format that `.env` and a service's `env_file` are written in. Anything else
//! after a `$` is refused with its place (compose's own behaviour: "invalid interpolation
//! format"). `mod.rs` walks the tree through [`Interpolator::value`]; `service.rs` reads
//! `env_file`s through [`dotenv`].

use std::collections::BTreeMap;

/// The variables a compose file may use.
#[derive(Clone, Debug, Default)]
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    /// The process environment over `dotenv` (the `.env` file's variables), as compose orders
    /// them.
    pub fn new(process: impl IntoIterator<Item = (String, String)>, dotenv: Vars) -> Vars {
        let mut vars = dotenv.0;
        vars.extend(process);
        Vars(vars)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A problem in one value: its byte offset within the value's text, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bad {
    pub offset: usize,
    pub message: String,
}

/// Substitutes variables; notes the variables that were used without being set (compose
/// substitutes an empty string and warns, and so does imag).
pub struct Interpolator<'a> {
    pub vars: &'a Vars,
    pub unset: Vec<(usize, String)>,
}

const FORMS: &str = "$VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, \
                     ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement} and $$ for a dollar sign";

impl Interpolator<'_> {
    /// The text with every variable substituted.
    pub fn value(&mut self, text: &str) -> Result<String, Bad> {
        let (out, end) = self.run(text, 0, false)?;
        debug_assert_eq!(end, text.len());
        Ok(out)
    }

    /// Substitutes from `start` to the end of `text`, or (`nested`) to the first unmatched `}`;
    /// returns the result and the offset where it stopped (at the `}`).
    fn run(&mut self, text: &str, start: usize, nested: bool) -> Result<(String, usize), Bad> {
        let bytes = text.as_bytes();
        let mut out = String::new();
        let mut i = start;
        while i < bytes.len() {
            match bytes[i] {
                b'}' if nested => return Ok((out, i)),
                b'$' => {
                    let (piece, next) = self.dollar(text, i)?;
                    out.push_str(&piece);
                    i = next;
                }
                _ => {
                    let c = text[i..].chars().next().expect("inside the text");
                    out.push(c);
                    i += c.len_utf8();
                }
            }
        }
        if nested {
            return Err(Bad {
                offset: start,
                message: "this ${ is never closed with }".into(),
            });
        }
        Ok((out, i))
    }

    /// One `$…` at `at`: its value and the offset after it.
    fn dollar(&mut self, text: &str, at: usize) -> Result<(String, usize), Bad> {
        let rest = &text[at + 1..];
        let bad = |message: String| Bad {
            offset: at,
            message,
        };
        if rest.starts_with('$') {
            return Ok(("$".into(), at + 2));
        }
        if !rest.starts_with('{') {
            let name_len = name_length(rest);
            if name_len == 0 {
                return Err(bad(format!(
                    "a lone $ is not a variable: write $$ for a dollar sign (supported: {FORMS})"
                )));
            }
            let name = &rest[..name_len];
            return Ok((self.lookup(name, at), at + 1 + name_len));
        }
        let body = &rest[1..];
        let name_len = name_length(body);
        let name = &body[..name_len];
        let after_name = at + 2 + name_len;
        let op_text = &text[after_name..];
        let op = ["}", ":-", "-", ":?", "?", ":+", "+"]
            .into_iter()
            .find(|op| op_text.starts_with(op));
        let (Some(op), false) = (op, name.is_empty()) else {
            let shown: String = text[at..].chars().take(24).collect();
            return Err(bad(format!(
                "{shown:?} is not a supported interpolation (supported: {FORMS})"
            )));
        };
        if op == "}" {
            return Ok((self.lookup(name, at), after_name + 1));
        }
        let word_start = after_name + op.len();
        let value = self.vars.get(name);
        let set = value.is_some();
        let non_empty = value.is_some_and(|v| !v.is_empty());
        // The word is only substituted when it is used (`${A:-$B}` does not warn about B when A
        // is set), as a shell does.
        let (word, close) = {
            let mut probe = Interpolator {
                vars: self.vars,
                unset: Vec::new(),
            };
            let (word, close) = probe.run(text, word_start, true)?;
            let used = match op {
                ":-" => !non_empty,
                "-" => !set,
                ":+" => non_empty,
                "+" => set,
                _ => false,
            };
            if used {
                self.unset.extend(probe.unset);
            }
            (word, close)
        };
        let result = match op {
            ":-" if !non_empty => word,
            "-" if !set => word,
            ":+" if non_empty => word,
            "+" if set => word,
            ":+" | "+" => String::new(),
            ":?" if !non_empty => return Err(bad(required(name, &word, "set and not empty"))),
            "?" if !set => return Err(bad(required(name, &word, "set"))),
            _ => value.unwrap_or_default().to_string(),
        };
        Ok((result, close + 1))
    }

    fn lookup(&mut self, name: &str, at: usize) -> String {
        if let Some(value) = self.vars.get(name) {
            value.to_string()
        } else {
            self.unset.push((at, name.to_string()));
            String::new()
        }
    }
}

fn required(name: &str, word: &str, what: &str) -> String {
    if word.is_empty() {
        format!("variable {name} must be {what}")
    } else {
        format!("variable {name} must be {what}: {word}")
    }
}

/// Length of the variable name at the start of `text` (`[A-Za-z_][A-Za-z0-9_]*`).
fn name_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes
        .first()
        .is_none_or(|b| !(b.is_ascii_alphabetic() || *b == b'_'))
    {
        return 0;
    }
    bytes
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count()
}

/// A line of a dotenv file that is not `KEY=VALUE`: its 1-based line and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub message: String,
}

/// Reads a dotenv file: `KEY=VALUE` lines, optionally `export KEY=VALUE`; `#` comments; values
/// unquoted (trimmed, a ` #` starts a comment), 'single-quoted' (literal) or "double-quoted"
/// (with `\n`, `\t`, `\"`, `\\`). Unquoted and double-quoted values are interpolated with the
/// variables defined above them and then `vars`, as compose does.
pub fn dotenv(text: &str, vars: &Vars) -> Result<Vec<(String, String)>, BadLine> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |message: String| BadLine {
            line: n + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(format!("{line:?} is not KEY=VALUE")));
        };
        let key = key.trim();
        if name_length(key) != key.len() {
            return Err(bad(format!("{key:?} is not a variable name")));
        }
        let value = value.trim_start();
        let (value, interpolate) = if let Some(rest) = value.strip_prefix('\'') {
            let end = rest
                .find('\'')
                .ok_or_else(|| bad("the ' is never closed".into()))?;
            (rest[..end].to_string(), false)
        } else if let Some(rest) = value.strip_prefix('"') {
            (
                double_quoted(rest).ok_or_else(|| bad("the \" is never closed".into()))?,
                true,
            )
        } else {
            let end = value.find(" #").unwrap_or(value.len());
            (value[..end].trim_end().to_string(), true)
        };
        let value = if interpolate {
            let mut scope = vars.clone();
            scope.0.extend(out.iter().cloned());
            Interpolator {
                vars: &scope,
                unset: Vec::new(),
            }
            .value(&value)
            .map_err(|b| bad(b.message))?
        } else {
            value
        };
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value));
    }
    Ok(out)
}

fn double_quoted(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn run(text: &str, vars: &Vars) -> Result<(String, Vec<String>), Bad> {
        let mut i = Interpolator {
            vars,
            unset: Vec::new(),
        };
        let out = i.value(text)?;
        Ok((out, i.unset.into_iter().map(|(_, n)| n).collect()))
    }

    #[test]
    fn the_forms_compose_knows() {
        let v = vars(&[("A", "a"), ("E", "")]);
        let ok = |text: &str| run(text, &v).unwrap().0;
        assert_eq!(ok("x${A}y $A-$$A"), "xay a-$A");
        assert_eq!(ok("${A:-d} ${E:-d} ${U:-d} ${E-d} ${U-d}"), "a d d  d");
        assert_eq!(ok("${A:+r}|${E:+r}|${E+r}|${U+r}"), "r||r|");
        assert_eq!(ok("${U:-${A}x}"), "ax", "nested defaults");
        assert_eq!(ok("${A:?need A} ${E?need E}"), "a ");
        assert_eq!(ok("üñî ${A}"), "üñî a");
    }

    #[test]
    fn unset_variables_are_empty_and_noted() {
        let (out, unset) = run("${NOPE}/$ALSO_NOT/${A:-$NOT_USED}", &vars(&[("A", "1")])).unwrap();
        assert_eq!(out, "//1");
        assert_eq!(unset, vec!["NOPE".to_string(), "ALSO_NOT".to_string()]);
    }

    #[test]
    fn errors_say_where_and_what() {
        let v = vars(&[("E", "")]);
        let err = |text: &str| run(text, &v).unwrap_err();
        assert_eq!(
            err("ab ${E:?E is needed}"),
            Bad {
                offset: 3,
                message: "variable E must be set and not empty: E is needed".into()
            }
        );
        assert_eq!(err("${U?}").message, "variable U must be set");
        let bad = err("x ${A/b/c}");
        assert_eq!(bad.offset, 2);
        assert!(
            bad.message.contains("\"${A/b/c}\" is not a supported"),
            "{bad:?}"
        );
        assert!(err("${#A}").message.contains("not a supported"));
        assert!(err("cost: 5$").message.contains("lone $"));
        assert!(err("${A:-x").message.contains("never closed"));
    }

    #[test]
    fn dotenv_files() {
        let text = "# comment\nexport A=1\nB = two words # note\nC='${A} literal'\nD=\"x\\ny ${A}\"\nE=${B:-no}\n\nA=3\n";
        let got = dotenv(text, &Vars::default()).unwrap();
        assert_eq!(
            got,
            vec![
                ("B".to_string(), "two words".to_string()),
                ("C".into(), "${A} literal".into()),
                ("D".into(), "x\ny 1".into()),
                ("E".into(), "two words".into()),
                ("A".into(), "3".into()),
            ]
        );
        assert_eq!(
            dotenv("A=1\nnonsense\n", &Vars::default()),
            Err(BadLine {
                line: 2,
                message: "\"nonsense\" is not KEY=VALUE".into()
            })
        );
        assert_eq!(dotenv("A=\"open\n", &Vars::default()).unwrap_err().line, 1);
    }

    #[test]
    fn the_process_environment_wins_over_dotenv() {
        let v = Vars::new(
            [("A".to_string(), "process".to_string())],
            vars(&[("A", "file"), ("B", "file")]),
        );
        assert_eq!(run("$A $B", &v).unwrap().0, "process file");
    }
}
