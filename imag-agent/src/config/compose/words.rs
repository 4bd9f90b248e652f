//! A `command:` or `entrypoint:` written as one string is split into words the way compose does
//! (shell-style quoting, but no shell runs: no variables, globs or pipes). `service.rs` uses it.

/// Splits `text` into words: blanks separate, 'single quotes' keep everything, "double quotes"
/// keep everything but `\"` and `\\`, a backslash outside quotes keeps the next character.
/// Returns the byte offset of an unclosed quote when there is one.
pub fn split(text: &str) -> Result<Vec<String>, usize> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, c)) => w.push(c),
                        None => return Err(at),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some((_, c @ ('"' | '\\' | '$' | '`'))) => {
                                w.push(*c);
                                chars.next();
                            }
                            _ => w.push('\\'),
                        },
                        Some((_, c)) => w.push(c),
                        None => return Err(at),
                    }
                }
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                if let Some((_, c)) = chars.next() {
                    w.push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn words_quotes_and_escapes() {
        let ok = |t: &str| split(t).unwrap();
        assert_eq!(ok("/hello --port 8080"), ["/hello", "--port", "8080"]);
        assert_eq!(ok("  sh -c 'echo $A; ls'  "), ["sh", "-c", "echo $A; ls"]);
        assert_eq!(
            ok(r#"a "b \"c\" d" e\ f ''"#),
            ["a", r#"b "c" d"#, "e f", ""]
        );
        assert_eq!(ok(r#"x"y"'z'"#), ["xyz"]);
        assert!(ok("").is_empty());
        assert_eq!(split("echo 'open"), Err(5));
        assert_eq!(split("a \"b"), Err(2));
    }
}
