//! Is a cell complete? Answers Jupyter's `is_complete_request` for Rust (and consoles use it to
//! decide whether Enter runs the code or opens a new line).
//!
//! A small lexer tracks brackets, strings, chars and (nested) comments: anything left open is
//! incomplete, a closing bracket that does not match is invalid, and a cell ending in a binary
//! operator or `=` is incomplete.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    Complete,
    /// Needs more input; `indent` is a suggestion for the next line.
    Incomplete {
        indent: String,
    },
    Invalid,
}

pub fn completeness(code: &str) -> Completeness {
    let chars: Vec<char> = code.chars().collect();
    let mut stack: Vec<char> = Vec::new();
    let mut i = 0;
    let mut last_significant: Option<usize> = None;
    let incomplete = |depth: usize| Completeness::Incomplete {
        indent: "    ".repeat(depth),
    };

    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if next == Some('*') => {
                let mut depth = 1;
                i += 2;
                while depth > 0 {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return incomplete(stack.len()),
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            '"' => {
                last_significant = Some(i);
                match skip_string(&chars, i + 1) {
                    Some(end) => i = end,
                    None => return incomplete(stack.len()),
                }
                continue;
            }
            'r' | 'b' | 'c' if is_raw_string_start(&chars, i) => {
                last_significant = Some(i);
                match skip_raw_string(&chars, i) {
                    Some(end) => i = end,
                    None => return incomplete(stack.len()),
                }
                continue;
            }
            '\'' => {
                last_significant = Some(i);
                i = skip_char_or_lifetime(&chars, i);
                continue;
            }
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    return Completeness::Invalid;
                }
            }
            _ => {}
        }
        if !c.is_whitespace() {
            last_significant = Some(i);
        }
        i += 1;
    }

    if !stack.is_empty() {
        return incomplete(stack.len());
    }
    if let Some(end) = last_significant
        && ends_with_continuation(&chars[..=end])
    {
        return incomplete(1);
    }
    Completeness::Complete
}

/// Index just past the closing quote, honouring escapes; `None` if unterminated.
fn skip_string(chars: &[char], mut i: usize) -> Option<usize> {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn is_raw_string_start(chars: &[char], i: usize) -> bool {
    // The prefix must not continue an identifier (e.g. `bar"`).
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let mut j = i;
    if matches!(chars[j], 'b' | 'c') {
        j += 1;
    }
    match chars.get(j) {
        Some('r') => {
            j += 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            chars.get(j) == Some(&'"')
        }
        Some('"') if j > i => true, // b"..." / c"..."
        _ => false,
    }
}

fn skip_raw_string(chars: &[char], mut i: usize) -> Option<usize> {
    if matches!(chars[i], 'b' | 'c') {
        i += 1;
    }
    if chars[i] != 'r' {
        // b"..." / c"...": an ordinary escaped string.
        return skip_string(chars, i + 1);
    }
    i += 1;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1; // opening quote
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    None
}

/// `'a'`, `'\n'`, `'\u{1F600}'` are chars; `'a` in `&'a str` or `'outer:` is a lifetime/label.
fn skip_char_or_lifetime(chars: &[char], i: usize) -> usize {
    match (chars.get(i + 1), chars.get(i + 2)) {
        (Some('\\'), _) => {
            let mut j = i + 2;
            while j < chars.len() && chars[j] != '\'' && chars[j] != '\n' {
                j += 1;
            }
            j + 1
        }
        (Some(_), Some('\'')) => i + 3,
        _ => i + 1,
    }
}

fn ends_with_continuation(chars: &[char]) -> bool {
    let text: String = chars.iter().collect();
    let text = text.trim_end();
    // `:command` lines are kernel commands, complete as typed.
    if text
        .lines()
        .last()
        .is_some_and(|l| l.trim_start().starts_with(':'))
    {
        return false;
    }
    const TRAILING: [&str; 16] = [
        "=", "+", "-", "*", "/", "%", "&&", "||", ".", ",", "->", "=>", "::", "|", "&", "^",
    ];
    // `..` / `..=` ranges may legally end an expression.
    if text.ends_with("..") {
        return false;
    }
    TRAILING.iter().any(|op| text.ends_with(op)) || text.ends_with("let") || text.ends_with(" in")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is(code: &str) -> &'static str {
        match completeness(code) {
            Completeness::Complete => "complete",
            Completeness::Incomplete { .. } => "incomplete",
            Completeness::Invalid => "invalid",
        }
    }

    #[test]
    fn complete_cells() {
        for code in [
            "1 + 1",
            "let x = 1;",
            "fn f() -> i32 { 1 }",
            "let s = \"a { b\";",
            "let c = '{';",
            "fn f<'a>(x: &'a str) -> &'a str { x }",
            "// comment with {\nlet y = 2;",
            "let r = r#\"raw \" { \"#;",
            "let b = b\"x\\\"y\";",
            "let q = (0..);",
            ":dep foo = \"1\"",
            "",
            "let t = '\\u{1F600}';",
        ] {
            assert_eq!(is(code), "complete", "{code:?}");
        }
    }

    #[test]
    fn incomplete_cells() {
        for code in [
            "fn f() {",
            "let v = vec![1,",
            "let s = \"abc",
            "/* unterminated",
            "let x =",
            "let y = 1 +",
            "a.iter()\n  .",
            "let r = r#\"abc\"",
        ] {
            assert_eq!(is(code), "incomplete", "{code:?}");
        }
    }

    #[test]
    fn invalid_cells() {
        for code in [")", "fn f() { )", "let v = [1, 2);", "}"] {
            assert_eq!(is(code), "invalid", "{code:?}");
        }
    }

    #[test]
    fn indent_follows_depth() {
        assert_eq!(
            completeness("fn f() {\n    if x {"),
            Completeness::Incomplete {
                indent: "        ".into()
            }
        );
    }
}
