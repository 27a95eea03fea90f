//! Completion and inspection from what the kernel already knows, for when rust-analyzer cannot
//! answer in time (its first analysis of std and tch takes seconds on a small machine, exactly
//! when a workshop presses Tab): the cell's variables and their types, the items defined so far,
//! Rust's keywords and std's prelude, and what rust-analyzer listed at install time (saved in
//! the prebuilt build dir): the names in a cell's scope, what follows `path::` for the modules
//! and types of std, tch and the prelude, and the methods of common types, each with its
//! signature and the start of its docs. Types of the cell's own `let`s come from `local_types`.

use crate::local_types::{CellScope, Inference, strip_generics};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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

/// One name rust-analyzer offered, as it offered it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KnownItem {
    /// What Tab inserts (`swap(x, y)`, `nn::`), as rust-analyzer inserts it.
    pub code: String,
    /// What a typed prefix is matched against (`swap`, `nn`).
    pub name: String,
    /// Jupyter's kind: `module`, `class`, `function`, `instance`, `keyword`.
    pub kind: String,
    /// Signature or type (`pub fn swap<T>(x: &mut T, y: &mut T)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The start of its docs (markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
}

/// What rust-analyzer knew at install (see the module's doc). Each distinct item is stored
/// once (`Iterator`'s methods are listed under every iterator type) and lists hold indices.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct KnownNames {
    items: Vec<KnownItem>,
    /// What completes at the start of a statement (types, functions, modules, macros).
    top_level: Vec<u32>,
    /// What follows `PATH::`, by PATH as a cell writes it (`std::collections`, `Tensor`, `nn`).
    paths: BTreeMap<String, Vec<u32>>,
    /// Methods and fields by type, under the type's last path segment without generics
    /// (`Tensor`, `Vec`, `str`, `slice`; see `local_types::Ty::key`).
    members: BTreeMap<String, Vec<u32>>,
    /// Paths that name what another path in `paths` names (`tch::Tensor` -> `Tensor`).
    aliases: BTreeMap<String, String>,
    /// While saving: each item's index.
    #[serde(skip)]
    interned: HashMap<KnownItem, u32>,
}

/// One list of saved items.
#[derive(Clone, Copy)]
pub struct Items<'a> {
    all: &'a [KnownItem],
    ids: &'a [u32],
}

impl<'a> Items<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a KnownItem> + 'a {
        let all = self.all;
        self.ids.iter().filter_map(move |&i| all.get(i as usize))
    }

    /// The item named `name` (its lookup name).
    pub fn find(self, name: &str) -> Option<&'a KnownItem> {
        self.iter().find(|i| i.name == name)
    }
}

impl KnownNames {
    pub fn load(path: &Path) -> KnownNames {
        std::fs::read(path)
            .ok()
            .and_then(|s| serde_json::from_slice(&s).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            serde_json::to_string(self).map_err(std::io::Error::other)?,
        )
    }

    fn list<'a>(&'a self, ids: &'a [u32]) -> Items<'a> {
        Items {
            all: &self.items,
            ids,
        }
    }

    fn intern(&mut self, items: Vec<KnownItem>) -> Vec<u32> {
        items
            .into_iter()
            .map(|item| {
                if let Some(&i) = self.interned.get(&item) {
                    return i;
                }
                let i = self.items.len() as u32;
                self.interned.insert(item.clone(), i);
                self.items.push(item);
                i
            })
            .collect()
    }

    /// The names in a cell's scope.
    pub fn top_level(&self) -> Items<'_> {
        self.list(&self.top_level)
    }

    /// What follows `path::`, for `path` exactly as saved.
    pub fn path(&self, path: &str) -> Option<Items<'_>> {
        self.paths.get(path).map(|ids| self.list(ids))
    }

    /// The members of the type saved under `key`.
    pub fn members(&self, key: &str) -> Option<Items<'_>> {
        self.members.get(key).map(|ids| self.list(ids))
    }

    pub fn has_path(&self, path: &str) -> bool {
        self.paths.contains_key(path)
    }

    pub fn set_top_level(&mut self, items: Vec<KnownItem>) {
        self.top_level = self.intern(items);
    }

    pub fn insert_path(&mut self, path: String, items: Vec<KnownItem>) {
        let ids = self.intern(items);
        self.paths.insert(path, ids);
    }

    /// Saves the members of the type `key` unless it has some already.
    pub fn insert_members(&mut self, key: String, items: Vec<KnownItem>) {
        if !self.members.contains_key(&key) {
            let ids = self.intern(items);
            self.members.insert(key, ids);
        }
    }

    /// Says that `from` names what `to` names.
    pub fn insert_alias(&mut self, from: String, to: String) {
        self.aliases.insert(from, to);
    }

    /// (paths, types, distinct items), for the installer's log.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.paths.len(), self.members.len(), self.items.len())
    }

    /// What follows `path::` (expanded through the cell's `use`s and the aliases).
    pub(crate) fn after(&self, path: &str, scope: &CellScope) -> Option<Items<'_>> {
        let path = strip_generics(path);
        self.path(&self.canonical(&scope.expand(&path)))
            .or_else(|| self.path(&self.canonical(&path)))
    }

    /// `path` with its longest aliased prefix replaced, until none is (`tch::nn::Linear` ->
    /// `nn::Linear` when `tch::nn` is an alias of `nn`).
    pub(crate) fn canonical(&self, path: &str) -> String {
        let mut path = path.to_owned();
        // Each step replaces a prefix by a path found earlier in the crawl: a few steps at most.
        for _ in 0..8 {
            if self.paths.contains_key(&path) {
                break;
            }
            let mut prefix = path.as_str();
            let replaced = loop {
                if let Some(to) = self.aliases.get(prefix) {
                    break Some(format!("{to}{}", &path[prefix.len()..]));
                }
                match prefix.rsplit_once("::") {
                    Some((head, _)) => prefix = head,
                    None => break None,
                }
            };
            match replaced {
                Some(p) => path = p,
                None => break,
            }
        }
        path
    }
}

/// The name a typed prefix is matched against: the identifier that starts what Tab inserts
/// (`swap` of `swap(x, y)`, `nn` of `nn::`, `vec!` of `vec![]`). rust-analyzer's own lookup
/// string may have doc aliases glued on (`Veclistvector`); it is the fallback.
pub fn name_of(code: &str, lookup: &str) -> String {
    let end = code.find(|c: char| !is_ident(c)).unwrap_or(code.len());
    match &code[..end] {
        "" => lookup.to_owned(),
        name if code[end..].starts_with('!') => format!("{name}!"),
        name => name.to_owned(),
    }
}

/// How much of an item's docs is saved: the first paragraphs, up to this many bytes.
pub const DOC_BYTES: usize = 600;

/// The first paragraphs of `doc`, cut at a paragraph (or line) end within [`DOC_BYTES`].
pub fn doc_start(doc: &str) -> String {
    let doc = doc.trim();
    if doc.len() <= DOC_BYTES {
        return doc.to_owned();
    }
    let mut cut = DOC_BYTES;
    while !doc.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &doc[..cut];
    let end = head
        .rfind("\n\n")
        .or_else(|| head.rfind('\n'))
        .unwrap_or(cut);
    let mut out = head[..end].trim_end().to_owned();
    // An unclosed code block would swallow what a client shows after it.
    if out.matches("```").count() % 2 == 1 {
        out.push_str("\n```");
    }
    out.push_str("\n\n…");
    out
}

/// What to complete at `byte_pos`: the identifier being typed, and what it follows:
/// `receiver.` (the expression before the dot) or `qualifier::`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Context<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) start: usize,
    pub(crate) receiver: Option<&'a str>,
    pub(crate) qualifier: Option<&'a str>,
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

/// Where the path that ends `s` starts (`a::b::<T>::c`, `Vec::<f32>`).
fn path_start(s: &str) -> usize {
    let mut start = s.len();
    loop {
        // A segment: generic arguments (`<f32>`) or a name.
        let segment = match s[..start].strip_suffix('>') {
            Some(h) => match matching_open(s, h.len(), '<', '>') {
                Some(open) => open,
                None => return start,
            },
            None => word_start(&s[..start]),
        };
        if segment == start {
            return start;
        }
        match s[..segment].strip_suffix("::") {
            Some(h) if !h.is_empty() && !h.ends_with(char::is_whitespace) => start = h.len(),
            _ => return segment,
        }
    }
}

/// The index of the `open` bracket matching the `close` bracket at `close_at`.
fn matching_open(s: &str, close_at: usize, open: char, close: char) -> Option<usize> {
    let mut depth = 0;
    for (i, c) in s[..=close_at].char_indices().rev() {
        if c == close {
            depth += 1;
        } else if c == open {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// Where the postfix expression that ends `s` starts: paths, calls, indexing, fields, `?`
/// (`Tensor::zeros([2], opts).view([-1])?`).
fn expression_start(s: &str) -> usize {
    let mut end = s.len();
    loop {
        let trimmed = s[..end].trim_end();
        end = trimmed.len();
        let last = trimmed.chars().next_back();
        match last {
            Some('?') => end -= 1,
            Some(c @ (')' | ']')) => {
                let open = if c == ')' { '(' } else { '[' };
                match matching_open(s, end - 1, open, c) {
                    // A macro call (`vec![1]`): its path, and nothing before it.
                    Some(i) if s[..i].ends_with('!') => return path_start(&s[..i - 1]),
                    Some(i) => end = i,
                    None => return end,
                }
            }
            Some(c) if is_ident(c) => {
                end = path_start(&s[..end]);
                match s[..end].strip_suffix('.') {
                    Some(h) if !h.ends_with('.') => end = h.len(),
                    _ => return end,
                }
            }
            Some('!') => return end,
            _ => return end,
        }
        // A call or index continues with what it is called on; anything else ends here.
        if !s[..end]
            .ends_with(|c: char| is_ident(c) || c == ')' || c == ']' || c == '?' || c == '>')
        {
            return end;
        }
    }
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
        if h.ends_with('.') {
            return None;
        }
        let r = h[expression_start(h)..].trim();
        (!r.is_empty() && !r.starts_with(|c: char| c.is_ascii_digit())).then_some(r)
    });
    let qualifier = head
        .strip_suffix("::")
        .map(|h| &h[path_start(h)..])
        .filter(|q| !q.is_empty());
    Context {
        prefix,
        start,
        receiver,
        qualifier,
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

/// What the session knows besides the saved names.
pub(crate) struct Session<'a> {
    /// Variables kept between cells, with their types as the engine names them.
    pub(crate) variables: &'a [(String, String)],
    /// Items (fns, structs) defined by earlier cells.
    pub(crate) items: &'a [String],
}

/// The members of the type of `receiver` (an expression of the cell).
fn members_of<'k>(
    receiver: &str,
    code_before: &str,
    known: &'k KnownNames,
    session: &Session,
) -> Option<Items<'k>> {
    let scope = CellScope::of(code_before);
    let inference = Inference {
        scope: &scope,
        variables: session.variables,
        known,
    };
    let ty = inference.type_of_text(receiver)?;
    known.members(&ty.key())
}

/// Candidates for `code` at `byte_pos`, best first: the cell's own names (variables, items),
/// then the prelude's, std's and keywords; after `x.`, the members of `x`'s type; after
/// `path::`, what rust-analyzer listed there at install. Returns (matches, start byte of the
/// replaced word).
pub(crate) fn complete(
    code: &str,
    byte_pos: usize,
    known: &KnownNames,
    session: &Session,
) -> (Vec<String>, usize) {
    let ctx = context(code, byte_pos);
    let mut out: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut add = |name: &str, code: &str| {
        // The kernel's own helpers (`__tch_kernel_*`) are not for users. A name comes once,
        // as its first source writes it (the cell's, then rust-analyzer's `println!()`).
        let internal = name.starts_with("__") && !ctx.prefix.starts_with("__");
        let name = name.trim_end_matches('!');
        if !internal
            && name.starts_with(ctx.prefix)
            && !names.iter().any(|n| n == name)
            && !out.iter().any(|c| c == code)
        {
            names.push(name.to_owned());
            out.push(code.to_owned());
        }
    };
    let code_before = &code[..ctx.start];
    if let Some(receiver) = ctx.receiver {
        for member in members_of(receiver, code_before, known, session)
            .into_iter()
            .flat_map(Items::iter)
        {
            add(&member.name, &member.code);
        }
    } else if let Some(qualifier) = ctx.qualifier {
        let scope = CellScope::of(code_before);
        for item in known
            .after(qualifier, &scope)
            .into_iter()
            .flat_map(Items::iter)
        {
            add(&item.name, &item.code);
        }
    } else {
        // The cell's own names first: what its patterns bind (`for item in ..`, `|x|`) and
        // what it `use`s, which only rust-analyzer would otherwise know.
        let scope = CellScope::of(code_before);
        for name in defined_before(code_before)
            .into_iter()
            .chain(scope.pattern_names.iter().map(String::as_str))
            .chain(scope.uses.keys().map(String::as_str))
        {
            add(name, name);
        }
        for (name, _) in session.variables {
            add(name, name);
        }
        for item in session.items {
            add(item, item);
        }
        for item in known.top_level().iter() {
            add(&item.name, &item.code);
        }
        for name in STD_NAMES.iter().chain(KEYWORDS) {
            add(name.trim_end_matches('!'), name);
        }
    }
    (out, ctx.start)
}

/// What the saved names say about the word that ends at `end` (a path, or a member after
/// `x.`), as (plain text, markdown).
pub(crate) fn inspect(
    code: &str,
    end: usize,
    known: &KnownNames,
    session: &Session,
) -> Option<(String, String)> {
    let ctx = context(code, end);
    if ctx.prefix.is_empty() {
        return None;
    }
    let code_before = &code[..ctx.start];
    let scope = CellScope::of(code_before);
    let found = |items: Option<Items>| -> Option<KnownItem> { items?.find(ctx.prefix).cloned() };
    let item = if let Some(receiver) = ctx.receiver {
        found(members_of(receiver, code_before, known, session))?
    } else if let Some(qualifier) = ctx.qualifier {
        found(known.after(qualifier, &scope))?
    } else {
        found(Some(known.top_level())).or_else(|| {
            // `HashMap` after `use std::collections::HashMap;`
            let full = scope.uses.get(ctx.prefix)?;
            let (parent, name) = full.rsplit_once("::")?;
            known.path(&known.canonical(parent))?.find(name).cloned()
        })?
    };
    let title = item.detail.clone().unwrap_or_else(|| item.name.clone());
    let doc = item.doc.clone().unwrap_or_default();
    let plain = format!("{title}\n\n{doc}").trim_end().to_owned();
    let markdown = format!("```rust\n{title}\n```\n\n{doc}")
        .trim_end()
        .to_owned();
    Some((plain, markdown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, code: &str, detail: Option<&str>, doc: Option<&str>) -> KnownItem {
        KnownItem {
            code: code.to_owned(),
            name: name.to_owned(),
            kind: "function".to_owned(),
            detail: detail.map(str::to_owned),
            doc: doc.map(str::to_owned),
        }
    }

    fn known() -> KnownNames {
        let mut k = KnownNames::default();
        k.set_top_level(vec![
            item("Tensor", "Tensor", None, Some("A tensor.")),
            item("Device", "Device", None, None),
            item("std", "std::", None, None),
        ]);
        k.insert_path(
            "std::collections".to_owned(),
            vec![
                item(
                    "HashMap",
                    "HashMap",
                    Some("pub struct HashMap<K, V>"),
                    Some("A hash map."),
                ),
                item("HashSet", "HashSet", None, None),
                item("BTreeMap", "BTreeMap", None, None),
            ],
        );
        k.insert_path(
            "std::collections::HashMap".to_owned(),
            vec![item(
                "new",
                "new()",
                Some("pub fn new() -> HashMap<K, V>"),
                None,
            )],
        );
        k.insert_path(
            "std::mem".to_owned(),
            vec![item(
                "swap",
                "swap(x, y)",
                Some("pub fn swap<T>(x: &mut T, y: &mut T)"),
                None,
            )],
        );
        k.insert_path(
            "Tensor".to_owned(),
            vec![
                item(
                    "zeros",
                    "zeros(size, options)",
                    Some("pub fn zeros(size: impl IntList, options: (Kind, Device)) -> Tensor"),
                    None,
                ),
                item(
                    "zeros_like",
                    "zeros_like(self_)",
                    Some("pub fn zeros_like(self_: &Tensor) -> Tensor"),
                    None,
                ),
            ],
        );
        k.insert_members(
            "Tensor".to_owned(),
            vec![
                item(
                    "size",
                    "size()",
                    Some("pub fn size(&self) -> Vec<i64>"),
                    None,
                ),
                item(
                    "sum",
                    "sum(dtype)",
                    Some("pub fn sum(&self, dtype: impl Into<Option<Kind>>) -> Tensor"),
                    None,
                ),
                item(
                    "view",
                    "view(s)",
                    Some("pub fn view(&self, s: impl IntList) -> Tensor"),
                    None,
                ),
            ],
        );
        k.insert_members(
            "Vec".to_owned(),
            vec![
                item(
                    "push",
                    "push(value)",
                    Some("pub fn push(&mut self, value: T)"),
                    Some("Appends an element."),
                ),
                item(
                    "pop",
                    "pop()",
                    Some("pub fn pop(&mut self) -> Option<T>"),
                    None,
                ),
            ],
        );
        k.insert_members(
            "HashMap".to_owned(),
            vec![item("insert", "insert(k, v)", None, None)],
        );
        k.insert_alias("tch::Tensor".to_owned(), "Tensor".to_owned());
        k.insert_alias("tch_prelude::std".to_owned(), "std".to_owned());
        k
    }

    #[test]
    fn each_item_is_stored_once_and_survives_a_round_trip() {
        let mut k = known();
        let (_, _, before) = k.counts();
        k.insert_path(
            "other".to_owned(),
            vec![item(
                "pop",
                "pop()",
                Some("pub fn pop(&mut self) -> Option<T>"),
                None,
            )],
        );
        assert_eq!(k.counts().2, before);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(KNOWN_NAMES_FILE);
        k.save(&file).unwrap();
        let back = KnownNames::load(&file);
        assert_eq!(
            back.path("other").unwrap().find("pop"),
            k.members("Vec").unwrap().find("pop")
        );
        assert_eq!(back.top_level().iter().count(), 3);
    }

    fn complete_in(
        code: &str,
        vars: &[(String, String)],
        items: &[String],
    ) -> (Vec<String>, usize) {
        complete(
            code,
            code.len(),
            &known(),
            &Session {
                variables: vars,
                items,
            },
        )
    }

    #[test]
    fn finds_prefix_receiver_and_qualifier() {
        let c = context("let y = x.si", 12);
        assert_eq!(
            (c.prefix, c.start, c.receiver, c.qualifier),
            ("si", 10, Some("x"), None)
        );
        let c = context("Tens", 4);
        assert_eq!((c.prefix, c.receiver, c.qualifier), ("Tens", None, None));
        let c = context("nn::li", 6);
        assert_eq!((c.prefix, c.start, c.qualifier), ("li", 4, Some("nn")));
        assert_eq!(
            context("let m = std::collections::Has", 30).qualifier,
            Some("std::collections")
        );
        assert_eq!(context("Vec::<f32>::ne", 14).qualifier, Some("Vec::<f32>"));
        assert_eq!(context("foo(", 4).prefix, "");
        assert_eq!(context("1.5", 3).receiver, None);
        assert_eq!(context("é.x", 4).receiver, Some("é"));
        assert_eq!(
            context("let y = Tensor::zeros([2], o).view([-1])?.s", 43).receiver,
            Some("Tensor::zeros([2], o).view([-1])?")
        );
        assert_eq!(context("f(a, b.c", 8).receiver, Some("b"));
        assert_eq!(context("vec![1].p", 9).receiver, Some("vec![1]"));
        assert_eq!(context("0..n", 4).receiver, None);
    }

    #[test]
    fn completes_variables_items_prelude_and_keywords() {
        let vars = vec![
            ("total".to_owned(), "i32".to_owned()),
            ("t".to_owned(), "tch_prelude::Tensor".to_owned()),
        ];
        let items = vec!["train".to_owned()];
        assert_eq!(
            complete_in("T", &vars, &items).0,
            vec!["Tensor", "ToString", "ToOwned", "TryFrom", "TryInto"]
        );
        assert_eq!(
            complete_in("let a = t", &vars, &items).0,
            vec!["total", "t", "train", "todo!", "trait", "true", "type"]
        );
        assert_eq!(
            complete_in("t.s", &vars, &items),
            (vec!["size()".to_owned(), "sum(dtype)".to_owned()], 2)
        );
        assert!(complete_in("total.s", &vars, &items).0.is_empty());
        assert!(complete_in("nn::l", &vars, &items).0.is_empty());
        assert!(
            complete_in("wh", &vars, &items)
                .0
                .contains(&"while".to_owned())
        );
        assert_eq!(
            complete_in("let zzz_value = 1;\nzzz_", &vars, &items).0,
            vec!["zzz_value"]
        );
        assert_eq!(
            complete_in("let mut acc = 0; fn accumulate() {}\nac", &vars, &items).0,
            vec!["acc", "accumulate"]
        );
    }

    #[test]
    fn completes_paths_and_methods_of_the_cells_own_lets() {
        let none: &[(String, String)] = &[];
        assert_eq!(
            complete_in("std::collections::HashMa", none, &[]).0,
            vec!["HashMap"]
        );
        assert_eq!(
            complete_in("std::mem::swa", none, &[]).0,
            vec!["swap(x, y)"]
        );
        // Re-exports are aliases of the path listed first.
        assert_eq!(
            complete_in("tch::Tensor::zeros_", none, &[]).0,
            vec!["zeros_like(self_)"]
        );
        assert_eq!(
            complete_in("tch_prelude::std::mem::sw", none, &[]).0,
            vec!["swap(x, y)"]
        );
        assert_eq!(
            complete_in("let t = Tensor::ze", none, &[]).0,
            vec!["zeros(size, options)", "zeros_like(self_)"]
        );
        assert_eq!(
            complete_in("let v = vec![1];\nv.pu", none, &[]).0,
            vec!["push(value)"]
        );
        assert_eq!(
            complete_in(
                "use std::collections::HashMap;\nlet m = HashMap::n",
                none,
                &[]
            )
            .0,
            vec!["new()"]
        );
        assert_eq!(
            complete_in(
                "use std::collections::HashMap;\nlet mut m = HashMap::new();\nm.ins",
                none,
                &[]
            )
            .0,
            vec!["insert(k, v)"]
        );
        assert_eq!(
            complete_in("let t = Tensor::zeros([2], o);\nt.view([-1]).s", none, &[]).0,
            vec!["size()", "sum(dtype)"]
        );
        assert_eq!(
            complete_in("Tensor::zeros([2], o).size().p", none, &[]).0,
            vec!["push(value)", "pop()"]
        );
        assert_eq!(
            complete_in("vec![1].p", none, &[]).0,
            vec!["push(value)", "pop()"]
        );
        // Names the cell's patterns bind and its uses, before std's and keywords.
        assert_eq!(
            complete_in("for item in v {\n    it", none, &[]).0,
            vec!["item"]
        );
        assert_eq!(
            complete_in("let f = |xval: i32| xv", none, &[]).0,
            vec!["xval"]
        );
        assert_eq!(
            complete_in("use ndarray::Array2;\nArr", none, &[]).0,
            vec!["Array2"]
        );
    }

    #[test]
    fn inspects_paths_types_and_methods() {
        let k = known();
        let none = Session {
            variables: &[],
            items: &[],
        };
        let (plain, markdown) = inspect("Tensor", 6, &k, &none).unwrap();
        assert_eq!(plain, "Tensor\n\nA tensor.");
        assert!(markdown.starts_with("```rust\nTensor\n```"));
        let code = "let v = vec![1.0];\nv.push";
        let (plain, _) = inspect(code, code.len(), &k, &none).unwrap();
        assert_eq!(
            plain,
            "pub fn push(&mut self, value: T)\n\nAppends an element."
        );
        let code = "use std::collections::HashMap;\nHashMap";
        assert!(
            inspect(code, code.len(), &k, &none)
                .unwrap()
                .0
                .contains("A hash map.")
        );
        assert!(
            inspect("std::collections::HashMap", 25, &k, &none)
                .unwrap()
                .0
                .contains("A hash map.")
        );
        assert!(inspect("nothing_here", 12, &k, &none).is_none());
    }

    #[test]
    fn names_are_what_tab_inserts_first() {
        assert_eq!(name_of("swap(x, y)", "swap"), "swap");
        assert_eq!(name_of("Vec", "Veclistvector"), "Vec");
        assert_eq!(name_of("nn::", "nn"), "nn");
        assert_eq!(name_of("vec![]", "vec!"), "vec!");
        assert_eq!(name_of("let mut $1 = ;", "letm"), "let");
        assert_eq!(name_of("<>", "x"), "x");
    }

    #[test]
    fn docs_are_cut_at_a_paragraph() {
        let long = format!("First.\n\n```\n{}\n", "x\n".repeat(DOC_BYTES));
        let cut = doc_start(&long);
        assert!(cut.len() <= DOC_BYTES + 10);
        assert_eq!(cut.matches("```").count() % 2, 0, "{cut}");
        assert_eq!(doc_start("short"), "short");
    }
}
