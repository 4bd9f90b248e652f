//! The compose file as a tree of [`Node`]s, each with the byte offset where it starts, built from
//! saphyr's marked nodes (`mod.rs` says why saphyr). Scalars keep the text as written (saphyr's
//! "representation", not a guessed type), so that `1.10` stays `1.10` and interpolation
//! (`interpolate.rs`) sees what the author wrote; `service.rs` and `top.rs` give them types.
//! Anchors and aliases are resolved by saphyr (with its bound on alias expansion); merge keys
//! (`<<: *defaults`), which YAML 1.2 leaves to applications and compose files use, are resolved
//! here.

use saphyr::{MarkedYaml, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::{Marker, Parser};

/// A node of the document: where it starts (a byte offset into the file) and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub at: usize,
    pub value: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Scalar(Scalar),
    Seq(Vec<Node>),
    /// Keys in the order written (merged keys after them); keys are unique.
    Map(Vec<(Key, Node)>),
}

/// A scalar as written; `quoted` scalars are never null, booleans or numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub quoted: bool,
    /// Byte offset of the text's first character (after an opening quote).
    pub text_at: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    pub name: String,
    pub at: usize,
}

/// A document that is no YAML (or not one mapping): where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line and column, as the configuration's problems count them.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Node {
    /// The entries, if this is a mapping.
    pub fn map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    pub fn seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The text of a scalar (numbers and booleans as written); `None` for null and collections.
    pub fn text(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar(s) => Some(&s.text),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        self.value == Value::Null
    }

    /// A boolean written plainly (`true`, `false`, any case).
    pub fn boolean(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar(s) if !s.quoted => match s.text.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// What kind of node this is, for messages ("a list", "a mapping", …).
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Scalar(_) => "a single value",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// Parses one YAML document into a tree. An empty file is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    // saphyr counts in characters; the configuration's spans are bytes.
    let bytes: Vec<usize> = text
        .char_indices()
        .map(|(b, _)| b)
        .chain([text.len()])
        .collect();
    let offset = |m: &Marker| bytes[m.index().min(bytes.len() - 1)];
    let mut loader: YamlLoader<'_, MarkedYaml<'_>> = YamlLoader::default();
    loader.early_parse(false);
    let mut parser = Parser::new_from_str(text);
    let syntax = |mark: &Marker, message: &str| SyntaxError {
        line: mark.line(),
        column: mark.col() + 1,
        message: message.to_string(),
    };
    if let Err(err) = parser.load(&mut loader, true) {
        return Err(syntax(err.marker(), err.info()));
    }
    if let Some(err) = loader.error() {
        return Err(syntax(err.marker(), err.info()));
    }
    let mut docs = loader.into_documents();
    if docs.len() > 1 {
        return Err(syntax(
            &docs[1].span.start,
            "a compose file holds one YAML document; this is a second one",
        ));
    }
    let Some(doc) = docs.pop() else {
        return Ok(Node {
            at: 0,
            value: Value::Map(Vec::new()),
        });
    };
    if matches!(doc.data, YamlData::BadValue) {
        return Ok(Node {
            at: 0,
            value: Value::Map(Vec::new()),
        });
    }
    convert(&doc, &offset).map_err(|(at, message)| {
        let (line, column) = super::super::error::line_column(text, at);
        SyntaxError {
            line,
            column,
            message,
        }
    })
}

type Converted = Result<Node, (usize, String)>;

fn convert(node: &MarkedYaml<'_>, offset: &dyn Fn(&Marker) -> usize) -> Converted {
    let at = offset(&node.span.start);
    let value = match &node.data {
        YamlData::Representation(text, style, tag) => {
            if let Some(tag) = tag
                && !tag.is_yaml_core_schema()
            {
                return Err((
                    at,
                    format!(
                        "the YAML tag {}{} is not supported (compose's !reset and !override \
                         belong to merging several files, which imag does not do)",
                        tag.handle, tag.suffix
                    ),
                ));
            }
            scalar(text, *style, at)
        }
        YamlData::Sequence(items) => Value::Seq(
            items
                .iter()
                .map(|item| convert(item, offset))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(entries) => {
            let mut own = Vec::new();
            let mut merged = Vec::new();
            for (key, value) in entries {
                let key_at = offset(&key.span.start);
                let name = match &key.data {
                    YamlData::Representation(text, _, _) => text.to_string(),
                    _ => return Err((key_at, "a mapping key must be a plain value".into())),
                };
                let value = convert(value, offset)?;
                if name == "<<"
                    && matches!(&key.data, YamlData::Representation(_, s, _) if *s == ScalarStyle::Plain)
                {
                    merged.push(value);
                } else {
                    own.push((Key { name, at: key_at }, value));
                }
            }
            for source in merged {
                merge(&mut own, source)?;
            }
            Value::Map(own)
        }
        YamlData::Tagged(tag, _) => {
            return Err((
                at,
                format!(
                    "the YAML tag {}{} is not supported (compose's !reset and !override belong \
                     to merging several files, which imag does not do)",
                    tag.handle, tag.suffix
                ),
            ));
        }
        YamlData::Value(_) | YamlData::Alias(_) | YamlData::BadValue => {
            return Err((at, "this YAML node could not be read".into()));
        }
    };
    Ok(Node { at, value })
}

fn scalar(text: &str, style: ScalarStyle, at: usize) -> Value {
    let quoted = matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted);
    if style == ScalarStyle::Plain && matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Value::Null;
    }
    Value::Scalar(Scalar {
        text: text.to_string(),
        quoted,
        text_at: at + usize::from(quoted),
    })
}

/// `<<: *x` or `<<: [*x, *y]`: the keys of the mapping(s) that the node does not set itself
/// (earlier sources win over later ones, as in YAML 1.1's merge key).
fn merge(own: &mut Vec<(Key, Node)>, source: Node) -> Result<(), (usize, String)> {
    let sources = match source.value {
        Value::Seq(items) => items,
        Value::Map(_) => vec![source],
        _ => {
            return Err((
                source.at,
                "a merge key (<<) takes a mapping or a list of mappings".into(),
            ));
        }
    };
    for source in sources {
        let Value::Map(entries) = source.value else {
            return Err((
                source.at,
                "a merge key (<<) takes a mapping or a list of mappings".into(),
            ));
        };
        for (key, value) in entries {
            if !own.iter().any(|(k, _)| k.name == key.name) {
                own.push((key, value));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_text_and_place() {
        let text = "a: 1.10\nb: \"x\"\nc:\nd: [1, ~]\n";
        let doc = parse(text).unwrap();
        let a = doc.get("a").unwrap();
        assert_eq!((a.text(), a.at), (Some("1.10"), 3));
        let b = doc.get("b").unwrap();
        assert_eq!(b.at, text.find('"').unwrap());
        assert_eq!(
            b.value,
            Value::Scalar(Scalar {
                text: "x".into(),
                quoted: true,
                text_at: b.at + 1
            })
        );
        assert!(doc.get("c").unwrap().is_null());
        let d = doc.get("d").unwrap().seq().unwrap();
        assert_eq!(d[0].text(), Some("1"));
        assert!(d[1].is_null());
        assert_eq!(doc.map().unwrap()[2].0.at, text.find('c').unwrap());
    }

    #[test]
    fn offsets_are_bytes_after_wide_characters() {
        let text = "é: ü\nb: x\n";
        let doc = parse(text).unwrap();
        assert_eq!(doc.get("b").unwrap().at, text.rfind('x').unwrap());
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "x-base: &base\n  image: i\n  user: u\ns:\n  <<: *base\n  user: me\n";
        let doc = parse(text).unwrap();
        let s = doc.get("s").unwrap();
        assert_eq!(s.get("image").unwrap().text(), Some("i"));
        assert_eq!(s.get("user").unwrap().text(), Some("me"), "own keys win");
        assert_eq!(s.map().unwrap().len(), 2);
    }

    #[test]
    fn syntax_errors_and_duplicates_have_a_place() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1, "{err:?}");
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.line, 3, "{err:?}");
        let err = parse("a: !reset []\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 4), "{err:?}");
        assert!(err.message.contains("!reset"), "{err:?}");
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("second"), "{err:?}");
        assert_eq!(parse("").unwrap().map().unwrap().len(), 0);
    }
}
