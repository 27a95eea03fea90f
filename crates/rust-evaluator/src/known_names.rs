//! Completion from what the kernel already knows, for when rust-analyzer cannot answer in time
//! (its first analysis of std and tch takes seconds on a small machine): the cell's variables
//! and their types, the items defined so far, Rust's keywords and std's prelude, and the names
//! rust-analyzer listed at install time (the prelude's names, and the methods of its main types),
//! which the installer saves in the prebuilt build dir.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the saved names, in the engine's build dir (seeded from the prebuilt one).
pub const KNOWN_NAMES_FILE: &str = "tch-kernel-known-names.json";

const KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "Self", "static", "struct", "super", "trait", "true", "type",
    "unsafe", "use", "where", "while",
];

/// std's prelude and the macros a notebook uses most.
const STD_NAMES: &[&str] = &[
    "Box",
    "String",
    "Vec",
    "Option",
    "Some",
    "None",
    "Result",
    "Ok",
    "Err",
    "ToString",
    "ToOwned",
    "Clone",
    "Copy",
    "Default",
    "Debug",
    "Drop",
    "Iterator",
    "IntoIterator",
    "Extend",
    "FromIterator",
    "From",
    "Into",
    "TryFrom",
    "TryInto",
    "AsRef",
    "AsMut",
    "PartialEq",
    "PartialOrd",
    "Eq",
    "Ord",
    "Fn",
    "FnMut",
    "FnOnce",
    "Send",
    "Sync",
    "Sized",
    "drop",
    "std",
    "core",
    "alloc",
    "println!",
    "print!",
    "eprintln!",
    "eprint!",
    "format!",
    "vec!",
    "assert!",
    "assert_eq!",
    "assert_ne!",
    "panic!",
    "write!",
    "writeln!",
    "dbg!",
    "todo!",
    "unimplemented!",
    "unreachable!",
    "matches!",
    "include_str!",
    "env!",
    "concat!",
    "stringify!",
    "f32",
    "f64",
    "i8",
    "i16",
    "i32",
    "i64",
    "i128",
    "isize",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "usize",
    "bool",
    "char",
    "str",
];

/// Names saved from rust-analyzer.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct KnownNames {
    /// What completes at the start of a statement (types, functions, modules, macros).
    pub top_level: Vec<String>,
    /// Methods and fields by type, as the engine names a variable's type (e.g.
    /// `tch_prelude::Tensor`).
    pub members: BTreeMap<String, Vec<String>>,
}

impl KnownNames {
    pub fn load(path: &Path) -> KnownNames {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            serde_json::to_string(self).map_err(std::io::Error::other)?,
        )
    }
}

/// What to complete at `byte_pos`: the identifier being typed, and the receiver when it follows
/// `receiver.` (only a plain identifier receiver is understood).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Context<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) start: usize,
    pub(crate) receiver: Option<&'a str>,
    pub(crate) after_path: bool,
}

pub(crate) fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where the identifier that ends `s` starts.
pub(crate) fn word_start(s: &str) -> usize {
    s.char_indices()
        .rev()
        .find(|(_, c)| !is_ident(*c))
        .map_or(0, |(i, c)| i + c.len_utf8())
}

pub(crate) fn context(code: &str, byte_pos: usize) -> Context<'_> {
    let mut pos = byte_pos.min(code.len());
    while !code.is_char_boundary(pos) {
        pos -= 1;
    }
    let start = word_start(&code[..pos]);
    let prefix = &code[start..pos];
    let head = &code[..start];
    let receiver = head.strip_suffix('.').and_then(|h| {
        let r = &h[word_start(h)..];
        (!r.is_empty() && !r.starts_with(|c: char| c.is_ascii_digit())).then_some(r)
    });
    Context {
        prefix,
        start,
        receiver,
        after_path: head.ends_with("::"),
    }
}

/// Names bound by `let`, `let mut`, `fn`, `struct`, `enum`, `const`, `static` in `code`.
fn defined_before(code: &str) -> Vec<&str> {
    let words: Vec<&str> = code
        .split(|c: char| !is_ident(c))
        .filter(|w| !w.is_empty())
        .collect();
    let mut names = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if matches!(
            *word,
            "let" | "fn" | "struct" | "enum" | "const" | "static" | "type" | "trait"
        ) {
            let next = words.get(i + 1).copied();
            let name = if next == Some("mut") {
                words.get(i + 2).copied()
            } else {
                next
            };
            if let Some(name) = name.filter(|n| !n.starts_with(|c: char| c.is_ascii_digit())) {
                names.push(name);
            }
        }
    }
    names
}

/// Candidates for `code` at `byte_pos`, best first: the cell's own names (variables, items),
/// then the prelude's, std's and keywords. Returns (matches, start byte of the replaced word).
pub(crate) fn complete(
    code: &str,
    byte_pos: usize,
    known: &KnownNames,
    variables: &[(String, String)],
    items: &[String],
) -> (Vec<String>, usize) {
    let ctx = context(code, byte_pos);
    let mut out: Vec<String> = Vec::new();
    let mut add = |name: &str| {
        // The kernel's own helpers (`__tch_kernel_*`) are not for users.
        let internal = name.starts_with("__") && !ctx.prefix.starts_with("__");
        if !internal && name.starts_with(ctx.prefix) && !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    };
    if let Some(receiver) = ctx.receiver {
        if let Some((_, ty)) = variables.iter().find(|(name, _)| name == receiver) {
            for member in known.members.get(ty).into_iter().flatten() {
                add(member);
            }
        }
    } else if !ctx.after_path {
        // A path (`nn::`) needs the analyzer; anything else is a name in scope, starting with
        // what the cell itself defines before the cursor.
        for name in defined_before(&code[..ctx.start]) {
            add(name);
        }
        for (name, _) in variables {
            add(name);
        }
        for item in items {
            add(item);
        }
        for name in &known.top_level {
            add(name);
        }
        for name in STD_NAMES.iter().chain(KEYWORDS) {
            add(name);
        }
    }
    (out, ctx.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_prefix_and_receiver() {
        assert_eq!(
            context("let y = x.si", 12),
            Context {
                prefix: "si",
                start: 10,
                receiver: Some("x"),
                after_path: false
            }
        );
        assert_eq!(
            context("Tens", 4),
            Context {
                prefix: "Tens",
                start: 0,
                receiver: None,
                after_path: false
            }
        );
        assert_eq!(
            context("nn::li", 6),
            Context {
                prefix: "li",
                start: 4,
                receiver: None,
                after_path: true
            }
        );
        assert_eq!(context("foo(", 4).prefix, "");
        assert_eq!(context("1.5", 3).receiver, None);
        assert_eq!(context("é.x", 4).receiver, Some("é"));
    }

    #[test]
    fn completes_variables_items_prelude_and_keywords() {
        let known = KnownNames {
            top_level: vec!["Tensor".into(), "Device".into()],
            members: BTreeMap::from([(
                "tch_prelude::Tensor".to_owned(),
                vec!["size".into(), "sum".into(), "view".into()],
            )]),
        };
        let vars = vec![
            ("total".to_owned(), "i32".to_owned()),
            ("t".to_owned(), "tch_prelude::Tensor".to_owned()),
        ];
        let items = vec!["train".to_owned()];
        assert_eq!(
            complete("T", 1, &known, &vars, &items).0,
            vec!["Tensor", "ToString", "ToOwned", "TryFrom", "TryInto"]
        );
        assert_eq!(
            complete("let a = t", 9, &known, &vars, &items).0,
            vec!["total", "t", "train", "todo!", "trait", "true", "type"]
        );
        assert_eq!(
            complete("t.s", 3, &known, &vars, &items),
            (vec!["size".to_owned(), "sum".to_owned()], 2)
        );
        assert!(complete("total.s", 7, &known, &vars, &items).0.is_empty());
        assert!(complete("nn::l", 5, &known, &vars, &items).0.is_empty());
        assert!(
            complete("wh", 2, &known, &vars, &items)
                .0
                .contains(&"while".to_owned())
        );
        assert_eq!(
            complete("let zzz_value = 1;\nzzz_", 23, &known, &vars, &items).0,
            vec!["zzz_value"]
        );
        assert_eq!(
            complete(
                "let mut acc = 0; fn accumulate() {}\nac",
                38,
                &known,
                &vars,
                &items
            )
            .0,
            vec!["acc", "accumulate"]
        );
    }
}
