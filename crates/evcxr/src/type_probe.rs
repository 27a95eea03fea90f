// tch-kernel addition to evcxr (see FORK.md).
//
// Names the types of the variables a cell defines by asking rustc instead of rust-analyzer, in
// the same build that makes the cell's shared object. The variables are stored with the type
// rustc infers, and for each new variable `x` the cell ends with
// `#[warn(warnings, unused_results)] { evcxr_type_of(&x); }`: the lint's warning "unused result of type
// `&T`" names `T`, with the public path it is reachable by (`tch_prelude::Tensor`,
// `std::collections::HashMap<..>`) because that build gets `-Ztrim-diagnostic-paths=false`.
// Integer and float fallback has happened by then, so `let n = 1` is `i32`.

use crate::code_block::CodeKind;
use crate::errors::CompilationError;
use crate::rust_analyzer::EDITION;
use crate::rust_analyzer::TypeName;
use crate::rust_analyzer::is_type_valid;
use ra_ap_syntax::AstNode;
use ra_ap_syntax::ast;
use ra_ap_syntax::ast::HasModuleItem;
use ra_ap_syntax::ast::HasName;

const PROBE_FN: &str = "evcxr_type_of";
/// At the crate root of a cell that defines variables without a type annotation.
pub(crate) const PROBE_ITEMS: &str =
    "#[inline(always)] fn evcxr_type_of<T: ?Sized>(x: &T) -> &T { x }";
const PROBE_LINT: &str = "unused_results";

/// The statement that makes rustc name the type of `variable`. `warnings` too, so that a
/// user's `#![deny(warnings)]` leaves it a warning.
pub(crate) fn probe_statement(variable: &str) -> String {
    format!("#[warn(warnings, {PROBE_LINT})] {{ {PROBE_FN}(&{variable}); }}")
}

/// A variable bound by a top-level `let` of the cell.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) name: String,
    pub(crate) is_mutable: bool,
    /// The annotation of `let x: T = ..`, kept as written.
    pub(crate) explicit_type: Option<String>,
}

/// The variables bound by the top-level `let` statements of `function_name` in `source`, in
/// order; a name bound twice (shadowing) appears once, as last bound. Mirrors what evcxr read
/// from rust-analyzer: `let x`, `let mut x`, and the identifiers inside patterns. Syntax alone
/// cannot tell a constant in a pattern (`let None = ..`) from a binding; rustc then reports
/// an error for it, as for any cell it cannot compile.
pub(crate) fn top_level_bindings(source: &str, function_name: &str) -> Vec<Binding> {
    let parsed = ast::SourceFile::parse(source, EDITION).tree();
    let mut bindings: Vec<Binding> = Vec::new();
    let mut add = |binding: Binding| {
        bindings.retain(|b| b.name != binding.name);
        bindings.push(binding);
    };
    for item in parsed.items() {
        let ast::Item::Fn(function) = item else {
            continue;
        };
        if function.name().is_none_or(|n| n.text() != function_name) {
            continue;
        }
        let Some(body) = function.body() else {
            continue;
        };
        for statement in body.statements() {
            let ast::Stmt::LetStmt(let_stmt) = statement else {
                continue;
            };
            let Some(pat) = let_stmt.pat() else { continue };
            if let ast::Pat::IdentPat(ident) = &pat
                && ident.pat().is_none()
                && let Some(name) = ident.name()
            {
                let explicit_type = let_stmt
                    .ty()
                    .map(|ty| ty.syntax().text().to_string())
                    .filter(|ty| is_type_valid(ty));
                add(Binding {
                    name: name.text().to_string(),
                    is_mutable: ident.mut_token().is_some(),
                    explicit_type,
                });
                continue;
            }
            // A destructuring pattern: every identifier in it, typed by rustc (the annotation,
            // if any, is for the whole pattern).
            for node in pat.syntax().descendants() {
                if let Some(ident) = ast::IdentPat::cast(node)
                    && let Some(name) = ident.name()
                {
                    add(Binding {
                        name: name.text().to_string(),
                        is_mutable: ident.mut_token().is_some(),
                        explicit_type: None,
                    });
                }
            }
        }
    }
    bindings
}

/// The variable and type named by one of the probe's warnings.
pub(crate) fn probed_type(warning: &CompilationError) -> Option<(String, String)> {
    if warning.code() != Some(PROBE_LINT) {
        return None;
    }
    let variable = warning
        .top_level_origins
        .iter()
        .find_map(|origin| match origin {
            CodeKind::PackVariable { variable_name } => Some(variable_name.clone()),
            _ => None,
        })?;
    let type_name = with_numeric_fallback(type_in_message(&warning.top_level_message)?);
    Some((variable, with_static_references(&type_name)))
}

/// rustc prints types with lifetimes erased (`&str`), but a stored variable is `'static`
/// (evcxr's store takes `T: 'static`), and `&str` in the next cell's `let` would be a borrow
/// local to that cell. So references get `'static`, except inside `fn(..)` and `Fn(..)`
/// signatures, where an elided lifetime means "any lifetime".
fn with_static_references(type_name: &str) -> String {
    let wrapped = format!("type T = {type_name};");
    let parsed = ast::SourceFile::parse(&wrapped, EDITION);
    if !parsed.errors().is_empty() {
        return type_name.to_owned();
    }
    // (start, end, replacement) edits of `wrapped`.
    let mut edits = Vec::new();
    for node in parsed.tree().syntax().descendants() {
        let in_signature = node.ancestors().any(|a| {
            ast::FnPtrType::can_cast(a.kind()) || ast::ParenthesizedArgList::can_cast(a.kind())
        });
        if in_signature {
            continue;
        }
        if let Some(reference) = ast::RefType::cast(node.clone())
            && reference.lifetime().is_none()
            && let Some(amp) = reference.amp_token()
        {
            let end = usize::from(amp.text_range().end());
            edits.push((end, end, "'static "));
        } else if let Some(lifetime) = ast::Lifetime::cast(node)
            && lifetime.text() == "'_"
        {
            let range = lifetime.syntax().text_range();
            edits.push((
                usize::from(range.start()),
                usize::from(range.end()),
                "'static",
            ));
        }
    }
    let mut out = wrapped;
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (start, end, text) in edits {
        out.replace_range(start..end, text);
    }
    out["type T = ".len()..out.len() - 1].to_owned()
}

/// Lints run after integer and float fallback, so this is only a safeguard: the probe calls
/// come after all of the cell's code, so nothing else can constrain such a type any more.
fn with_numeric_fallback(type_name: &str) -> String {
    type_name
        .replace("{integer}", "i32")
        .replace("{float}", "f64")
}

/// `T` of "unused result of type `&T`".
fn type_in_message(message: &str) -> Option<&str> {
    message
        .strip_prefix("unused result of type `&")?
        .strip_suffix('`')
}

/// What evcxr can do with the type rustc printed: closures, `impl Trait`, anonymous types
/// (`{async block@..}`) and fn items cannot be written in a `let`.
pub(crate) fn classify(type_name: Option<&str>) -> TypeName {
    let Some(type_name) = type_name else {
        return TypeName::Unknown;
    };
    if type_name.starts_with("{closure@") {
        TypeName::Closure
    } else if type_name.contains('{') || type_name.contains("impl ") || !is_type_valid(type_name) {
        TypeName::Unknown
    } else {
        TypeName::Named(type_name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(source: &str) -> Vec<(String, bool, Option<String>)> {
        top_level_bindings(source, "f")
            .into_iter()
            .map(|b| (b.name, b.is_mutable, b.explicit_type))
            .collect()
    }

    #[test]
    fn finds_top_level_lets_only() {
        let source = "fn f() { let a = 1; let mut b: Vec<u8> = vec![]; { let inner = 2; } \
                      let (c, mut d) = (1, 2); let Some(e) = Some(1) else { return }; \
                      let a = \"shadowed\"; a }";
        assert_eq!(
            names(source),
            vec![
                ("b".into(), true, Some("Vec<u8>".into())),
                ("c".into(), false, None),
                ("d".into(), true, None),
                ("e".into(), false, None),
                ("a".into(), false, None),
            ]
        );
    }

    #[test]
    fn ignores_other_functions_and_invalid_annotations() {
        assert!(names("fn g() { let x = 1; }").is_empty());
        assert_eq!(
            names("fn f() { let x: _ = 1; }"),
            vec![("x".into(), false, None)]
        );
    }

    #[test]
    fn reads_the_type_from_the_message() {
        assert_eq!(
            type_in_message("unused result of type `&tch_prelude::Tensor`"),
            Some("tch_prelude::Tensor")
        );
        assert_eq!(
            type_in_message(
                "unused result of type `&std::collections::HashMap<std::string::String, i32>`"
            ),
            Some("std::collections::HashMap<std::string::String, i32>")
        );
        assert_eq!(
            type_in_message("unused result of type `&&str`"),
            Some("&str")
        );
        assert_eq!(type_in_message("mismatched types"), None);
    }

    #[test]
    fn unconstrained_numbers_get_rusts_defaults() {
        assert_eq!(
            with_numeric_fallback("({integer}, std::vec::Vec<{float}>)"),
            "(i32, std::vec::Vec<f64>)"
        );
    }

    #[test]
    fn references_become_static_outside_signatures() {
        assert_eq!(with_static_references("&str"), "&'static str");
        assert_eq!(with_static_references("&mut [u8]"), "&'static mut [u8]");
        assert_eq!(
            with_static_references("std::slice::Iter<'_, (&str, i32)>"),
            "std::slice::Iter<'static, (&'static str, i32)>"
        );
        assert_eq!(
            with_static_references("std::boxed::Box<dyn std::ops::Fn(&str) -> usize>"),
            "std::boxed::Box<dyn std::ops::Fn(&str) -> usize>"
        );
        assert_eq!(with_static_references("fn(&u8)"), "fn(&u8)");
        assert_eq!(with_static_references("&'static str"), "&'static str");
        assert_eq!(
            with_static_references("std::vec::Vec<f64>"),
            "std::vec::Vec<f64>"
        );
    }

    #[test]
    fn classifies_unnameable_types() {
        assert_eq!(
            classify(Some("std::vec::Vec<f64>")),
            TypeName::Named("std::vec::Vec<f64>".into())
        );
        assert_eq!(classify(Some("&str")), TypeName::Named("&str".into()));
        assert_eq!(
            classify(Some("{closure@src/lib.rs:13:13: 13:21}")),
            TypeName::Closure
        );
        assert_eq!(
            classify(Some(
                "std::iter::Map<std::slice::Iter<'_, f64>, {closure@src/lib.rs:1:1: 1:2}>"
            )),
            TypeName::Unknown
        );
        assert_eq!(
            classify(Some("impl std::iter::Iterator<Item = i32>")),
            TypeName::Unknown
        );
        assert_eq!(classify(Some("fn(i32) -> i32 {foo}")), TypeName::Unknown);
        assert_eq!(classify(None), TypeName::Unknown);
    }
}

/// tch-kernel: a probed type name as people read it: without module paths
/// (`std::option::Option<std::string::String>` is `Option<String>`). The probe's names keep
/// their paths so that later cells' code can name the type; only what is shown drops them.
pub fn short_type_name(type_name: &str) -> String {
    let mut out = String::with_capacity(type_name.len());
    let mut word = String::new();
    let mut chars = type_name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            // `word::` is a path prefix.
            chars.next();
            word.clear();
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

#[cfg(test)]
mod short_type_name_tests {
    use super::short_type_name;

    #[test]
    fn paths_are_dropped_generics_kept() {
        assert_eq!(
            short_type_name("std::option::Option<std::string::String>"),
            "Option<String>"
        );
        assert_eq!(
            short_type_name("std::collections::HashMap<String, (i32, tch::Tensor)>"),
            "HashMap<String, (i32, Tensor)>"
        );
        assert_eq!(short_type_name("&'static str"), "&'static str");
        assert_eq!(short_type_name("[f64; 3]"), "[f64; 3]");
    }
}
