//! Plain words for the errors newcomers meet most: a one-line hint next to rustc's own text,
//! and libtorch errors cut to their message (without the C++ backtrace).
//!
//! The list comes from the workshop notebooks with one line changed the way a beginner writes
//! it (tests/test_newcomers.py has each case): a variable that borrows another, a value used
//! after a move, numbers of different types, a tensor passed without `&`, `?` in a function
//! that returns nothing, a variable of a cell that failed.

/// The hint for a compile error, from its code (`E0382`) and its text (the message, labels and
/// helps, joined); None when there is nothing to add.
pub(crate) fn compile_hint(code: Option<&str>, text: &str) -> Option<String> {
    let code = code.unwrap_or("");
    if matches!(code, "E0382" | "E0505") || text.contains("moved value") {
        let name = quoted_after(text, "moved value: ").unwrap_or("x");
        return Some(format!(
            "`{name}` was given away (moved) by an earlier line and is gone. Lend it instead with \
             `&{name}`, or copy it: `{name}.shallow_clone()` (a tensor sharing its data), \
             `{name}.copy()` (a tensor with its own data), `{name}.clone()` (other types)."
        ));
    }
    if text.contains(evcxr::BORROWED_VARIABLE) {
        return Some(
            "Use the borrow where it is made, e.g. `nn::linear(vs.root() / \"fc\", 4, 2, \
             Default::default())`, or build what needs it in one block, which keeps only the \
             result: `let net = { let root = vs.root(); nn::seq().add(nn::linear(&root / \"fc\", \
             4, 2, Default::default())) };`"
                .to_owned(),
        );
    }
    if text.contains("operator can only be used") && text.contains('?') {
        return Some(
            "`?` passes an error to the caller, so the function must return a `Result`: \
             `fn name(..) -> Result<T, TchError>`, ending in `Ok(value)`. Or write `.unwrap()`: \
             a failure then stops the cell with the error and keeps your variables. In a cell \
             itself, `?` works as is."
                .to_owned(),
        );
    }
    if let Some(found) = reference_expected(text) {
        return Some(match found {
            Reference::Missing(ty) => format!(
                "This takes a reference (`&{ty}`): put `&` before the value to lend it, and \
                 you keep it."
            ),
            Reference::Extra(ty) => format!(
                "This takes a `{ty}` of its own, not a reference: remove the `&`, or pass a \
                 copy (`x.shallow_clone()` for a tensor sharing its data, `x.clone()` otherwise)."
            ),
        });
    }
    if mixes_numbers(text) {
        return Some(
            "Rust never converts numbers by itself: convert one side with `as` (`n as f64`), or \
             give a literal its type (`0.1f32`, `2i64`). tch takes `f64` for scalars and \
             learning rates and `i64` for sizes and indices."
                .to_owned(),
        );
    }
    if code == "E0425"
        && let Some(name) = quoted_after(text, "cannot find value ")
    {
        return Some(format!(
            "No variable `{name}` is defined now. If an earlier cell defines it, run that \
             cell (a cell that failed keeps none of its variables)."
        ));
    }
    None
}

/// The text between the backticks that follow `prefix`.
fn quoted_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(&rest[..rest.find('`')?])
}

enum Reference {
    /// Expected `&T`, found `T`.
    Missing(String),
    /// Expected `T`, found `&T`.
    Extra(String),
}

fn reference_expected(text: &str) -> Option<Reference> {
    let mut rest = text;
    while let Some(at) = rest.find("expected `") {
        rest = &rest[at + "expected `".len()..];
        let Some(end) = rest.find('`') else { break };
        let expected = &rest[..end];
        let Some(found) = quoted_after(&rest[end..], ", found ") else {
            continue;
        };
        let strip = |t: &str| {
            t.trim_start_matches('&')
                .trim_start_matches("mut ")
                .to_owned()
        };
        if expected.starts_with('&') && !found.starts_with('&') && strip(expected) == found {
            return Some(Reference::Missing(strip(expected)));
        }
        if found.starts_with('&') && !expected.starts_with('&') && strip(found) == expected {
            return Some(Reference::Extra(expected.to_owned()));
        }
    }
    None
}

const NUMBER_TYPES: &[&str] = &[
    "f32",
    "f64",
    "i8",
    "i16",
    "i32",
    "i64",
    "u8",
    "u16",
    "u32",
    "u64",
    "usize",
    "isize",
    "{float}",
    "{integer}",
];

/// rustc's "expected `f32`, found `f64`" or "cannot multiply `f64` by `f32`" (and the like).
fn mixes_numbers(text: &str) -> bool {
    let number = |t: &str| NUMBER_TYPES.contains(&t);
    let mut rest = text;
    while let Some(at) = rest.find("expected `") {
        rest = &rest[at + "expected `".len()..];
        if let Some(end) = rest.find('`')
            && let Some(found) = quoted_after(&rest[end..], ", found ")
            && number(&rest[..end])
            && number(found)
        {
            return true;
        }
    }
    for verb in [
        "add",
        "subtract",
        "multiply",
        "divide",
        "calculate the remainder of",
    ] {
        if let Some(left) = quoted_after(text, &format!("cannot {verb} "))
            && number(left)
        {
            let after = &text[text.find(&format!("`{left}`")).unwrap_or(0)..];
            for joiner in [" to ", " from ", " by ", " divided by "] {
                if let Some(right) = quoted_after(after, &format!("`{left}`{joiner}"))
                    && number(right)
                {
                    return true;
                }
            }
        }
    }
    false
}

/// A libtorch error in a panic message, cut to its first lines: tch's `Torch("...")` holds the
/// C++ message and then "Exception raised from ..." and some 25 stack frames, Debug-escaped
/// onto one line. None when the message is not one.
pub(crate) fn libtorch_error(message: &str) -> Option<String> {
    let inner = match message.find("Torch(\"") {
        // A panic of `unwrap()`: the error's Debug form, escaped onto one line.
        Some(at) => unescape_debug(&message[at + "Torch(\"".len()..]),
        // The error's Display form (returned by a `?`), on several lines.
        None if message.contains("\nException raised from") => message
            .strip_prefix("Internal torch error: ")
            .unwrap_or(message)
            .to_owned(),
        None => return None,
    };
    let cut = ["\nException raised from", "\nframe #"]
        .iter()
        .filter_map(|m| inner.find(m))
        .min()
        .unwrap_or(inner.len());
    let text = inner[..cut].trim();
    if text.is_empty() {
        return None;
    }
    let mut out = format!("libtorch: {text}");
    if text.contains("scalar type") || text.contains("dtype") {
        out.push_str(
            "\nhint: the tensors have different dtypes; convert one, e.g. \
             `x.to_kind(Kind::Float)`.",
        );
    }
    Some(out)
}

/// The text of a Debug-formatted string, from after its opening quote to its closing one.
fn unescape_debug(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => {}
                Some('0') => out.push('\0'),
                Some('u') => {
                    // \u{XXXX}
                    let code: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                    if let Some(c) = u32::from_str_radix(&code, 16).ok().and_then(char::from_u32) {
                        out.push(c);
                    }
                }
                Some(other) => out.push(other),
                None => break,
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_values_name_the_variable() {
        let hint = compile_hint(Some("E0382"), "use of moved value: `a`").unwrap();
        assert!(
            hint.contains("`&a`") && hint.contains("a.shallow_clone()"),
            "{hint}"
        );
    }

    #[test]
    fn number_mismatches() {
        for text in [
            "mismatched types expected `f64`, found `f32`",
            "mismatched types expected `i64`, found `i32`",
            "cannot divide `{float}` by `{integer}`",
            "cannot multiply `f64` by `f32`",
            "cannot add `f32` to `f64`",
        ] {
            assert!(mixes_numbers(text), "{text}");
        }
        assert!(!mixes_numbers("expected `Tensor`, found `f64`"));
    }

    #[test]
    fn references() {
        let hint = compile_hint(
            Some("E0308"),
            "mismatched types expected `&Tensor`, found `Tensor`",
        )
        .unwrap();
        assert!(hint.contains("put `&`"), "{hint}");
        let hint = compile_hint(
            Some("E0308"),
            "mismatched types expected `Tensor`, found `&Tensor`",
        )
        .unwrap();
        assert!(hint.contains("remove the `&`"), "{hint}");
    }

    #[test]
    fn question_mark_in_a_function() {
        let text =
            "the `?` operator can only be used in a function that returns `Result` or `Option`";
        assert!(
            compile_hint(Some("E0277"), text)
                .unwrap()
                .contains("Result<T, TchError>")
        );
    }

    #[test]
    fn libtorch_errors_lose_the_backtrace() {
        let message = "called `Result::unwrap()` on an `Err` value: Torch(\"shape '[7]' is \
                       invalid for input of size 6\\nException raised from infer_size_impl at \
                       /pytorch/aten/src/ATen/InferSize.h:99 (most recent call first):\\nframe \
                       #0: c10::Error::Error() + 0x9 (0x7f in libc10.so)\\nframe #1: x\")";
        assert_eq!(
            libtorch_error(message).unwrap(),
            "libtorch: shape '[7]' is invalid for input of size 6"
        );
        assert!(libtorch_error("index out of bounds").is_none());
        let display = "Internal torch error: shape '[3]' is invalid for input of size 2\nException raised from infer_size_impl at x.h:1\nframe #0: y";
        assert_eq!(
            libtorch_error(display).unwrap(),
            "libtorch: shape '[3]' is invalid for input of size 2"
        );
        let dtype = "Torch(\"expected m1 and m2 to have the same dtype, but got: double != float\\nException raised from x\")";
        assert!(libtorch_error(dtype).unwrap().contains("to_kind"));
    }
}
