//! A YAML file as a tree of nodes that remember where their scalars lie, in bytes: the locator reads
//! values through it and the splicer replaces exactly those bytes, so comments, quoting, indentation and
//! line endings stay as the author wrote them. A file is never re-serialised.

use std::ops::Range;

use granit_parser::{Event, Parser, ScalarStyle};

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar {
        value: String,
        /// The scalar's bytes in the file, quotes included when quoted.
        span: Range<usize>,
        style: ScalarStyle,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
    /// An alias: not followed (an image behind an anchor is not edited through its alias).
    Alias,
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match self {
            Node::Seq(items) => items,
            _ => &[],
        }
    }

    /// Every scalar value of the tree (a mapping's keys are not values).
    pub fn scalars<'a>(&'a self, out: &mut Vec<&'a Node>) {
        match self {
            Node::Scalar { .. } => out.push(self),
            Node::Seq(items) => items.iter().for_each(|n| n.scalars(out)),
            Node::Map(entries) => entries.iter().for_each(|(_, v)| v.scalars(out)),
            Node::Alias => {}
        }
    }
}

/// The documents of a YAML stream. Err: the parser's message (the file is left alone).
pub fn documents(text: &str) -> Result<Vec<Node>, String> {
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    // Open collections: a sequence's items, or a mapping's flat key, value, key, value, ...
    let mut stack: Vec<(bool, Vec<Node>)> = Vec::new();
    let mut finished: Option<Node> = None;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| e.to_string())?;
        let node = match event {
            Event::SequenceStart(..) => {
                stack.push((false, Vec::new()));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push((true, Vec::new()));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((is_map, items)) = stack.pop() else {
                    return Err("unbalanced YAML collections".into());
                };
                if is_map {
                    let mut entries = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        entries.push((k, v));
                    }
                    Node::Map(entries)
                } else {
                    Node::Seq(items)
                }
            }
            Event::Scalar(value, style, ..) => Node::Scalar {
                value: value.into_owned(),
                span: span
                    .byte_range()
                    .ok_or("the YAML parser gave no byte offsets")?,
                style,
            },
            Event::Alias(_) | Event::UnresolvedAlias(_) => Node::Alias,
            Event::DocumentEnd => {
                if let Some(doc) = finished.take() {
                    docs.push(doc);
                }
                continue;
            }
            _ => continue,
        };
        match stack.last_mut() {
            Some((_, items)) => items.push(node),
            None => finished = Some(node),
        }
    }
    Ok(docs)
}

/// Whether a plain scalar of this text is read as something other than a string (YAML 1.2's core schema,
/// and 1.1's booleans, which kustomize's parser still knows): a number, a boolean, null.
pub fn reads_as_non_string(text: &str) -> bool {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "" | "~"
            | "null"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "y"
            | "n"
            | ".inf"
            | "-.inf"
            | "+.inf"
            | ".nan"
    ) {
        return true;
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    digits.parse::<f64>().is_ok()
        || digits
            .strip_prefix("0x")
            .is_some_and(|h| i64::from_str_radix(h, 16).is_ok())
        || digits
            .strip_prefix("0o")
            .is_some_and(|o| i64::from_str_radix(o, 8).is_ok())
}

/// The 1-based line of byte `at`.
pub fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The rest of the line after byte `at` (without the line break).
pub fn rest_of_line(text: &str, at: usize) -> &str {
    let rest = &text[at.min(text.len())..];
    let end = rest.find(['\n', '\r']).unwrap_or(rest.len());
    &rest[..end]
}

/// `text` with the scalar at `span` (whose value is `old`) holding `new` instead: only the value's bytes
/// change; quotes stay. None when the value is not written verbatim there (escapes, a folded scalar).
pub fn splice(text: &str, span: &Range<usize>, old: &str, new: &str) -> Option<String> {
    let raw = text.get(span.clone())?;
    let at = raw.find(old)?;
    // The value must be the whole scalar, quotes aside: `"6.0.2"` or `6.0.2`, not a part of `a6.0.2b`.
    let outside = raw.len() - old.len();
    let quoted = outside == 2
        && at == 1
        && matches!(
            (raw.as_bytes()[0], raw.as_bytes()[raw.len() - 1]),
            (b'"', b'"') | (b'\'', b'\'')
        );
    if !(outside == 0 || quoted) {
        return None;
    }
    let start = span.start + at;
    let mut out = String::with_capacity(text.len() + new.len());
    out.push_str(&text[..start]);
    out.push_str(new);
    out.push_str(&text[start + old.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_carry_their_byte_spans_in_every_style() {
        let text = "a: plain # c\nb: \"dq\"\nc: 'sq'\nd: [x, \"y\"]\né: ü\n";
        let docs = documents(text).unwrap();
        let doc = &docs[0];
        for (key, raw) in [("a", "plain"), ("b", "\"dq\""), ("c", "'sq'"), ("é", "ü")] {
            let Some(Node::Scalar { span, .. }) = doc.get(key) else {
                panic!("{key}")
            };
            assert_eq!(&text[span.clone()], raw, "{key}");
        }
        let Node::Scalar { span, .. } = &doc.get("d").unwrap().items()[1] else {
            panic!()
        };
        assert_eq!(&text[span.clone()], "\"y\"");
    }

    #[test]
    fn splice_keeps_every_other_byte() {
        let text = "image: \"x:1\"   # keep\r\nother: 1\r\n";
        let docs = documents(text).unwrap();
        let Some(Node::Scalar { span, .. }) = docs[0].get("image") else {
            panic!()
        };
        let out = splice(text, span, "x:1", "x:22").unwrap();
        assert_eq!(out, "image: \"x:22\"   # keep\r\nother: 1\r\n");
        assert_eq!(rest_of_line(text, span.end), "   # keep");
        assert_eq!(line_of(text, span.start), 1);
    }

    #[test]
    fn values_yaml_reads_as_numbers_or_booleans() {
        for typed in ["1.10", "2", "1e3", "0x1F", "true", "No", "null", "~"] {
            assert!(reads_as_non_string(typed), "{typed}");
        }
        for string in ["6.0.2", "v1.10", "1.10-alpine", "latest", "sha256:abc"] {
            assert!(!reads_as_non_string(string), "{string}");
        }
    }

    #[test]
    fn several_documents_and_a_parse_error() {
        let docs = documents("---\na: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(documents("a: [1, 2\n").is_err());
    }
}
