//! The type of an expression in a cell that has not run yet, well enough to complete its methods
//! (`let v = vec![1];` then `v.pu`): from a `let`'s annotation, a literal, a macro, or the return
//! type of a call whose signature rust-analyzer saved at install (`Tensor::zeros(..)`,
//! `x.matmul(..)`), following `?`, `unwrap()` and earlier `let`s. No trait solving: where it
//! cannot tell, it says nothing and rust-analyzer answers once it is warm.

use crate::known_names::{KnownItem, KnownNames};
use ra_ap_syntax::ast::{self, HasName};
use ra_ap_syntax::{AstNode, Edition, SourceFile};
use std::collections::HashMap;

/// How far one name's type is followed through other names (`let b = a; let c = b;`).
const MAX_DEPTH: usize = 8;

/// A type as written (`Vec<i32>`, `&str`, `Result<Tensor, TchError>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ty(pub(crate) String);

impl Ty {
    fn new(text: &str) -> Ty {
        Ty(text.trim().to_owned())
    }

    /// The name its members are saved under: the last path segment without generics, references
    /// or `mut` (`alloc::vec::Vec<i32>` and `&mut Vec<f32>` are both `Vec`; `[f32]` is `slice`).
    pub(crate) fn key(&self) -> String {
        let mut t = self.0.trim();
        loop {
            let stripped = t
                .trim_start_matches('&')
                .trim_start()
                .trim_start_matches("mut ")
                .trim_start_matches("dyn ")
                .trim_start_matches("impl ")
                .trim_start();
            let stripped = stripped
                .strip_prefix('\'')
                .map_or(stripped, |s| s.split_once(' ').map_or("", |(_, rest)| rest));
            if stripped == t {
                break;
            }
            t = stripped;
        }
        if t.starts_with('[') {
            return "slice".to_owned();
        }
        let base = t.split('<').next().unwrap_or(t);
        base.rsplit("::").next().unwrap_or(base).trim().to_owned()
    }

    /// The first generic argument (`T` of `Option<T>` or `Result<T, E>`).
    fn first_argument(&self) -> Option<Ty> {
        let open = self.0.find('<')?;
        let inner = self.0[open + 1..].strip_suffix('>')?;
        let mut depth = 0i32;
        for (i, c) in inner.char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => return Some(Ty::new(&inner[..i])),
                _ => {}
            }
        }
        Some(Ty::new(inner))
    }

    /// What `?`, `unwrap()` and `expect()` give: `T` of `Result<T, _>` and `Option<T>`.
    fn unwrapped(&self) -> Option<Ty> {
        matches!(self.key().as_str(), "Result" | "Option")
            .then(|| self.first_argument())
            .flatten()
    }
}

/// The return type in a signature as rust-analyzer details it (`fn(&self, other: &Tensor) ->
/// Tensor`, `pub fn zeros(..) -> Tensor where ...`), with `Self` replaced by `self_ty`.
pub(crate) fn return_type(detail: &str, self_ty: &Ty) -> Option<Ty> {
    // The first `->` outside brackets (an argument may be `impl Fn(i64) -> i64`, and so may
    // the return type itself).
    let bytes = detail.as_bytes();
    let mut depth = 0i32;
    let mut arrow = None;
    let mut i = 0;
    while i < bytes.len() && arrow.is_none() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'>') => {
                if depth == 0 {
                    arrow = Some(i + 2);
                }
                i += 1;
            }
            b'(' | b'[' | b'<' => depth += 1,
            b')' | b']' | b'>' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    let ret = detail[arrow?..].trim();
    let ret = ret.split(" where").next().unwrap_or(ret).trim();
    if ret.is_empty() {
        return None;
    }
    Some(Ty(replace_self(ret, &self_ty.0)))
}

/// `Self` as a whole word replaced by `with`.
fn replace_self(text: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("Self") {
        let before_ok = !rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        let after = &rest[i + 4..];
        let after_ok = !after
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { with } else { "Self" });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// What the cell says about its names before the cursor: `let`s and function parameters with
/// their annotation or initializer, and `use` aliases.
pub(crate) struct CellScope {
    /// Name -> its bindings before the cursor, in order (`let t = t.view(..)` shadows).
    bindings: HashMap<String, Vec<Binding>>,
    /// Every name a pattern binds before the cursor (`for item in ..`, `|x|`, match arms).
    pub(crate) pattern_names: Vec<String>,
    /// Name -> full path, from the cell's `use` items (`HashMap` -> `std::collections::HashMap`).
    pub(crate) uses: HashMap<String, String>,
}

#[derive(Clone)]
enum Binding {
    Annotated(Ty),
    Init(ast::Expr),
}

impl CellScope {
    /// Reads the cell's code before the cursor (the rest may not parse yet).
    pub(crate) fn of(code_before: &str) -> CellScope {
        // A cell is statements and items: a function body holds both.
        let body = format!("fn __cell() {{\n{code_before}\n}}");
        let file = SourceFile::parse(&body, Edition::Edition2021).tree();
        let mut bindings: HashMap<String, Vec<Binding>> = HashMap::new();
        let mut uses = HashMap::new();
        let mut pattern_names = Vec::new();
        for node in file.syntax().descendants() {
            if let Some(stmt) = ast::LetStmt::cast(node.clone()) {
                let Some(ast::Pat::IdentPat(pat)) = stmt.pat() else {
                    continue;
                };
                let Some(name) = pat.name() else { continue };
                let binding = match (stmt.ty(), stmt.initializer()) {
                    (Some(ty), _) => Binding::Annotated(Ty::new(&ty.syntax().text().to_string())),
                    (None, Some(init)) => Binding::Init(init),
                    (None, None) => continue,
                };
                bindings
                    .entry(name.text().to_string())
                    .or_default()
                    .push(binding);
            } else if let Some(param) = ast::Param::cast(node.clone()) {
                if let (Some(ast::Pat::IdentPat(pat)), Some(ty)) = (param.pat(), param.ty())
                    && let Some(name) = pat.name()
                {
                    bindings
                        .entry(name.text().to_string())
                        .or_default()
                        .push(Binding::Annotated(Ty::new(&ty.syntax().text().to_string())));
                }
            } else if let Some(name) = ast::IdentPat::cast(node.clone()).and_then(|p| p.name()) {
                let name = name.text().to_string();
                if !pattern_names.contains(&name) {
                    pattern_names.push(name);
                }
            } else if let Some(tree) = ast::Use::cast(node).and_then(|u| u.use_tree()) {
                collect_uses(&tree, "", &mut uses);
            }
        }
        CellScope {
            bindings,
            uses,
            pattern_names,
        }
    }

    /// A path as written, with its first segment expanded when the cell `use`d it.
    pub(crate) fn expand(&self, path: &str) -> String {
        let (first, rest) = path.split_once("::").unwrap_or((path, ""));
        match self.uses.get(first) {
            Some(full) if rest.is_empty() => full.clone(),
            Some(full) => format!("{full}::{rest}"),
            None => path.to_owned(),
        }
    }
}

fn collect_uses(tree: &ast::UseTree, prefix: &str, out: &mut HashMap<String, String>) {
    let path = tree
        .path()
        .map(|p| p.syntax().text().to_string())
        .unwrap_or_default();
    let full = match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.clone(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}::{path}"),
    };
    if let Some(list) = tree.use_tree_list() {
        for sub in list.use_trees() {
            collect_uses(&sub, &full, out);
        }
        return;
    }
    if tree.star_token().is_some() {
        return;
    }
    let alias = tree
        .rename()
        .and_then(|r| r.name())
        .map(|n| n.text().to_string());
    let last = full.rsplit("::").next().unwrap_or(&full).to_owned();
    let name = alias.unwrap_or(last);
    if name != "self" && !name.is_empty() && name != "_" {
        out.insert(name, full);
    }
}

/// Infers types with what the cell binds, the session's variables (name, type) and the
/// signatures saved at install.
pub(crate) struct Inference<'a> {
    pub(crate) scope: &'a CellScope,
    pub(crate) variables: &'a [(String, String)],
    pub(crate) known: &'a KnownNames,
}

/// While an initializer is typed: how many of each name's latest bindings it cannot see (its
/// own, and those it is inside of), so `let t = t.view(..)` reads the `t` before it.
type Hidden = HashMap<String, usize>;

impl Inference<'_> {
    /// The type of the expression `text` (a receiver before `.`).
    pub(crate) fn type_of_text(&self, text: &str) -> Option<Ty> {
        let file =
            SourceFile::parse(&format!("fn f() {{ {text} ; }}"), Edition::Edition2021).tree();
        let expr = file
            .syntax()
            .descendants()
            .find_map(ast::ExprStmt::cast)
            .and_then(|s| s.expr())?;
        self.type_of(&expr, 0, &Hidden::new())
    }

    fn type_of(&self, expr: &ast::Expr, depth: usize, hidden: &Hidden) -> Option<Ty> {
        if depth > MAX_DEPTH {
            return None;
        }
        match expr {
            ast::Expr::ParenExpr(p) => self.type_of(&p.expr()?, depth + 1, hidden),
            ast::Expr::RefExpr(r) => self.type_of(&r.expr()?, depth + 1, hidden),
            ast::Expr::Literal(l) => Some(Ty::new(literal_type(l)?)),
            ast::Expr::MacroExpr(m) => {
                let name = m.macro_call()?.path()?.segment()?.name_ref()?;
                match name.text().to_string().as_str() {
                    "vec" => Some(Ty::new("Vec")),
                    "format" => Some(Ty::new("String")),
                    _ => None,
                }
            }
            ast::Expr::ArrayExpr(_) => Some(Ty::new("[_]")),
            ast::Expr::RecordExpr(r) => Some(Ty::new(&r.path()?.syntax().text().to_string())),
            ast::Expr::TryExpr(t) => self.type_of(&t.expr()?, depth + 1, hidden)?.unwrapped(),
            ast::Expr::PathExpr(p) => {
                let path = p.path()?;
                if path.qualifier().is_none() {
                    let name = path.segment()?.name_ref()?.text().to_string();
                    return self.type_of_name(&name, depth + 1, hidden);
                }
                // A unit variant or constant (`Device::Cpu`): the qualifier's type.
                let qualifier = path.qualifier()?.syntax().text().to_string();
                let last = Ty::new(&qualifier).key();
                last.starts_with(char::is_uppercase).then(|| Ty::new(&last))
            }
            ast::Expr::CallExpr(call) => {
                let ast::Expr::PathExpr(callee) = call.expr()? else {
                    return None;
                };
                let path = callee.path()?;
                let name = path.segment()?.name_ref()?.text().to_string();
                let Some(qualifier) = path.qualifier() else {
                    // A tuple struct or variant (`Some(x)`), or a function in scope.
                    if name == "Some" || name == "Ok" || name == "Err" {
                        return None;
                    }
                    let item = self.known.top_level().find(&name)?;
                    return item_type(item, &Ty::new(&name));
                };
                let qualifier = strip_generics(&qualifier.syntax().text().to_string());
                let full = self.scope.expand(&qualifier);
                let self_ty = Ty::new(&qualifier);
                let item = self
                    .known
                    .path(&self.known.canonical(&full))
                    .or_else(|| self.known.path(&qualifier))
                    .and_then(|items| items.find(&name));
                match item {
                    Some(item) => item_type(item, &self_ty),
                    // `Type::new(..)` of a type we know nothing about: most likely `Self`.
                    None if matches!(name.as_str(), "new" | "default" | "from") => {
                        let key = self_ty.key();
                        key.starts_with(char::is_uppercase).then(|| Ty::new(&key))
                    }
                    None => None,
                }
            }
            ast::Expr::MethodCallExpr(call) => {
                let receiver = self.type_of(&call.receiver()?, depth + 1, hidden)?;
                let method = call.name_ref()?.text().to_string();
                if matches!(method.as_str(), "unwrap" | "expect" | "unwrap_or_default")
                    && let Some(inner) = receiver.unwrapped()
                {
                    return Some(inner);
                }
                if matches!(method.as_str(), "clone" | "to_owned") {
                    return Some(receiver);
                }
                let item = self.known.members(&receiver.key())?.find(&method)?;
                item_type(item, &receiver)
            }
            _ => None,
        }
    }

    /// A name's type: the cell's last binding of it that `hidden` leaves visible, else a
    /// variable of the session.
    fn type_of_name(&self, name: &str, depth: usize, hidden: &Hidden) -> Option<Ty> {
        let skip = hidden.get(name).copied().unwrap_or(0);
        let all = self.scope.bindings.get(name).map_or(&[][..], Vec::as_slice);
        let visible = all.len().checked_sub(skip + 1).map(|i| &all[i]);
        match visible {
            Some(Binding::Annotated(ty)) => Some(ty.clone()),
            Some(Binding::Init(init)) => {
                let mut inner = hidden.clone();
                inner.insert(name.to_owned(), skip + 1);
                self.type_of(init, depth + 1, &inner)
            }
            None => self
                .variables
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| Ty::new(t)),
        }
    }
}

/// What calling `item` gives (its signature's return type).
fn item_type(item: &KnownItem, self_ty: &Ty) -> Option<Ty> {
    return_type(item.detail.as_deref()?, self_ty)
}

fn literal_type(literal: &ast::Literal) -> Option<&'static str> {
    let text = literal.syntax().text().to_string();
    Some(match literal.kind() {
        ast::LiteralKind::String(_) => "&str",
        ast::LiteralKind::Char(_) => "char",
        ast::LiteralKind::Bool(_) => "bool",
        ast::LiteralKind::IntNumber(_) => suffix(&text).unwrap_or("i32"),
        ast::LiteralKind::FloatNumber(_) => suffix(&text).unwrap_or("f64"),
        _ => return None,
    })
}

/// A numeric literal's type suffix (`1u8`, `0.5f32`).
fn suffix(text: &str) -> Option<&'static str> {
    const SUFFIXES: [&str; 14] = [
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
        "f32", "f64",
    ];
    SUFFIXES.into_iter().find(|s| text.ends_with(s))
}

/// `Vec::<f32>` -> `Vec`: turbofish and generic arguments dropped from a path.
pub(crate) fn strip_generics(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.replace("::::", "::").trim_end_matches("::").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, detail: &str) -> KnownItem {
        KnownItem {
            code: format!("{name}()"),
            name: name.to_owned(),
            kind: "function".to_owned(),
            detail: Some(detail.to_owned()),
            doc: None,
        }
    }

    fn known() -> KnownNames {
        let mut k = KnownNames::default();
        k.set_top_level(vec![item("seq", "pub fn seq() -> Sequential")]);
        k.insert_path(
            "Tensor".to_owned(),
            vec![item("zeros", "pub fn zeros(size: impl IntList) -> Tensor")],
        );
        k.insert_members(
            "Tensor".to_owned(),
            vec![
                item("matmul", "pub fn matmul(&self, other: &Tensor) -> Tensor"),
                item("f_sum", "pub fn f_sum(&self) -> Result<Tensor, TchError>"),
                item("size", "pub fn size(&self) -> Vec<i64>"),
            ],
        );
        k.insert_members(
            "Vec".to_owned(),
            vec![item("iter", "pub fn iter(&self) -> Iter<'_, T>")],
        );
        k
    }

    fn infer(code: &str, receiver: &str) -> Option<String> {
        let known = known();
        let scope = CellScope::of(code);
        let variables = vec![("w".to_owned(), "tch_prelude::Tensor".to_owned())];
        let inference = Inference {
            scope: &scope,
            variables: &variables,
            known: &known,
        };
        inference.type_of_text(receiver).map(|t| t.key())
    }

    #[test]
    fn types_from_lets_literals_calls_and_variables() {
        assert_eq!(infer("let v = vec![1];\n", "v").as_deref(), Some("Vec"));
        assert_eq!(
            infer("let mut s = String::new();", "s").as_deref(),
            Some("String")
        );
        assert_eq!(
            infer("let x: &mut Vec<f32> = todo!();", "x").as_deref(),
            Some("Vec")
        );
        assert_eq!(infer("let n = 3u8;", "n").as_deref(), Some("u8"));
        assert_eq!(infer("let s = \"a\";", "s").as_deref(), Some("str"));
        assert_eq!(
            infer("let t = Tensor::zeros([2]);", "t").as_deref(),
            Some("Tensor")
        );
        assert_eq!(
            infer("let t = Tensor::zeros([2]);", "t.matmul(&t)").as_deref(),
            Some("Tensor")
        );
        assert_eq!(infer("let s = w.f_sum()?;", "s").as_deref(), Some("Tensor"));
        assert_eq!(
            infer("let s = w.f_sum().unwrap();", "s").as_deref(),
            Some("Tensor")
        );
        assert_eq!(infer("let d = w.size();", "d").as_deref(), Some("Vec"));
        assert_eq!(infer("", "w").as_deref(), Some("Tensor"));
        assert_eq!(
            infer("let a = w; let b = a;", "b").as_deref(),
            Some("Tensor")
        );
        assert_eq!(
            infer("let net = seq();", "net").as_deref(),
            Some("Sequential")
        );
        assert_eq!(
            infer(
                "use std::collections::HashMap; let m = HashMap::new();",
                "m"
            )
            .as_deref(),
            Some("HashMap")
        );
        assert_eq!(
            infer("fn f(vs: &nn::VarStore) { ", "vs").as_deref(),
            Some("VarStore")
        );
        assert_eq!(infer("let q = mystery();", "q"), None);
        assert_eq!(infer("", "nobody"), None);
        // A name bound to itself reads the binding before it (or the session's variable).
        assert_eq!(infer("let a = a;", "a"), None);
        assert_eq!(infer("let w = w.size();", "w").as_deref(), Some("Vec"));
        assert_eq!(
            infer("let t = Tensor::zeros([2]);\nlet t = t.size();", "t").as_deref(),
            Some("Vec")
        );
    }

    #[test]
    fn return_types_from_signatures() {
        let t = Ty::new("Tensor");
        assert_eq!(
            return_type("fn(&self) -> Self", &t),
            Some(Ty::new("Tensor"))
        );
        assert_eq!(
            return_type(
                "fn map<F: Fn(i64) -> i64>(self, f: F) -> Vec<i64> where F: Copy",
                &t
            ),
            Some(Ty::new("Vec<i64>"))
        );
        assert_eq!(return_type("fn(&mut self, x: T)", &t), None);
        assert_eq!(
            return_type("fn adder(n: i64) -> impl Fn(i64) -> i64", &t),
            Some(Ty::new("impl Fn(i64) -> i64"))
        );
        assert_eq!(
            Ty::new("Result<Option<Tensor>, E>").unwrapped(),
            Some(Ty::new("Option<Tensor>"))
        );
        assert_eq!(Ty::new("&'a mut [f32]").key(), "slice");
        assert_eq!(Ty::new("alloc::vec::Vec<i32>").key(), "Vec");
        assert_eq!(
            replace_self("Option<Self> + SelfLike", "T"),
            "Option<T> + SelfLike"
        );
        assert_eq!(strip_generics("Vec::<f32>"), "Vec");
        assert_eq!(
            strip_generics("std::collections::HashMap::<K, V>"),
            "std::collections::HashMap"
        );
    }
}
