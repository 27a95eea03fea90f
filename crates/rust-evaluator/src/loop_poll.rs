//! Every loop a cell writes stops at ■: before a cell is compiled, a call to the interrupt poll
//! (`child/items.rs`) goes at the top of the body of each `loop`, `while` and `for` in it, in
//! statements and in the functions, methods and closures it defines. An interrupt then stops
//! the loop as `check_interrupt()` does, and the variables of earlier cells are kept.
//!
//! A `for` loop is cut into chunks with one poll each, so its inner loop is still vectorised: a
//! loop over an integer range (`0..n`, `1..=steps`) into sub-ranges, each a plain counted loop;
//! a loop over another iterator by the iterator's type (`child/items.rs`): a slice's or a
//! range's as a sub-slice or a sub-range, any other's counted in a bounded `while`. `while` is
//! chunked the same way; `loop` (and a `for` or `while` with a `break`, and a `for` around
//! another loop) polls at every iteration. How many items a chunk has is learnt per loop (a
//! static in the generated code, `__TchKernelSite`) from the time its chunks take: about a
//! millisecond's worth, from one item (a training step, so that ■ stops the loop at the next
//! step) to 4096 (cheap arithmetic).
//! The body of each `Drop::drop` a cell defines is wrapped (`__tch_kernel_in_drop`), so that a
//! destructor that runs while an interrupt unwinds is not stopped by that interrupt.
//! Compile errors are mapped back to the cell as written ([`Instrumented::original_position`]).

use ra_ap_syntax::ast::{
    self, HasArgList, HasAttrs, HasGenericArgs, HasLoopBody, HasName, RangeItem,
};
use ra_ap_syntax::{AstNode, Edition, SourceFile, SyntaxKind, SyntaxNode};
use std::ops::Range;

/// The call inserted into loop bodies. A path from the crate root, so that it resolves inside
/// modules too; the function is in every cell's crate.
pub(crate) const POLL_CALL: &str = "crate::__tch_kernel_poll();";

/// The next chunk of a `for` loop's iterator `__tch_it` (see `How::Chunks`): the two traits
/// are the chunked kinds (slices, ranges) and any iterator's, found in that order.
const SPLIT: &str = "let (mut __tch_chunk, __tch_limit, __tch_step, __tch_last) = { #[allow(unused_imports)] use crate::{__TchKernelSplitFast as _, __TchKernelSplitAny as _}; (&&crate::__TchKernelSplit::of(&__tch_it)).__tch_split(&mut __tch_it, __tch_size) };";

/// A chunked loop's state: how many items its chunks take (`__tch_size`), learnt per loop.
const SITE: &str = "static __TCH_SITE: crate::__TchKernelSite = crate::__TchKernelSite::new(); let mut __tch_size = __TCH_SITE.size();";

/// After a chunk that did not end the loop: the size of the next, from the time it took.
const LEARN: &str = "__tch_size = __TCH_SITE.learn(__tch_size, __tch_t);";

/// After a chunked loop, as the last statement of the block it is in. An empty `asm!`: without
/// it, LLVM (the cell's `opt-level=1`, and 2 as well) kept a float accumulator of a chunked
/// loop over an iterator in memory at every item whenever the value was live across a call
/// after the loop (`println!("{s}")`), which made a zipped dot product 1.5-2.8x as slow as the
/// plain loop. Why it helps is LLVM's affair (the loop's exit is then a block of its own); it
/// was found by trying, and `bench/loop_poll.py` checks it.
const LOOP_END: &str = "crate::__tch_kernel_loop_end()";

/// When a chunk starts.
const START: &str = "let __tch_t = crate::__tch_kernel_ticks();";

/// When a chunk of a range starts, if it is not the last.
const TIMED: &str =
    "let __tch_t = if __tch_top == __tch_hi { 0 } else { crate::__tch_kernel_ticks() };";

/// When a chunk of an iterator starts (after `SPLIT`), unless it is known to be the last: a
/// sub-iterator (`limit` usize::MAX) that ends the loop. Any other iterator's chunk may be
/// followed by more.
const SPLIT_TIMED: &str = "let __tch_t = if __tch_last && __tch_limit == usize::MAX { 0 } else { crate::__tch_kernel_ticks() };";

/// A cell's code with the polls inserted, and how its positions map back.
pub(crate) struct Instrumented {
    pub(crate) code: String,
    /// (start in `code`, start in the original, length, copied from the original): the pieces
    /// `code` is made of, in order. A generated piece maps to the original offset it stands at.
    pieces: Vec<(usize, usize, usize, bool)>,
    original: std::sync::Arc<str>,
}

impl Instrumented {
    /// `code` as it is (polls turned off).
    pub(crate) fn unchanged(code: &str) -> Instrumented {
        Instrumented {
            code: code.to_owned(),
            pieces: Vec::new(),
            original: code.into(),
        }
    }

    /// The cell as it was written.
    pub(crate) fn original_code(&self) -> std::sync::Arc<str> {
        self.original.clone()
    }

    pub(crate) fn is_unchanged(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The (1-based line, 1-based column) in the original cell of a position in the
    /// instrumented code, as rustc's diagnostics give them.
    pub(crate) fn original_position(&self, line: usize, column: usize) -> (usize, usize) {
        if self.is_unchanged() {
            return (line, column);
        }
        let offset = offset_of(&self.code, line, column);
        let piece = self
            .pieces
            .iter()
            .rev()
            .find(|(out, ..)| *out <= offset)
            .copied();
        let original = match piece {
            Some((out, orig, len, true)) => orig + (offset - out).min(len),
            Some((_, orig, _, false)) => orig,
            None => 0,
        };
        line_column(&self.original, original.min(self.original.len()))
    }
}

/// The byte offset of a 1-based (line, character column) in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let rest = &text[line_start..];
    line_start
        + rest
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(rest.len(), |(i, _)| i)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, column)
}

/// How the loops of a cell poll for an interrupt (`TCH_KERNEL_LOOP_POLL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoopPolls {
    /// In chunks of items learnt per loop (see the module's documentation): the default.
    #[default]
    Chunked,
    /// At every iteration of every loop: simpler, and slower in tight loops (the benchmark's
    /// middle column, `bench/loop_poll.py`).
    EveryIteration,
    /// Not at all: only `check_interrupt()` and progress bars stop a loop.
    Off,
}

impl LoopPolls {
    /// The setting's value: `0` is off, `every` polls at every iteration, anything else (or
    /// nothing) chunks.
    pub fn from_setting(value: Option<&str>) -> LoopPolls {
        match value {
            Some("0") => LoopPolls::Off,
            Some("every") => LoopPolls::EveryIteration,
            _ => LoopPolls::Chunked,
        }
    }
}

/// Inserts the polls into every loop of `code` that may call them, as `polls` says, and wraps
/// the destructors it defines.
pub(crate) fn instrument_with(code: &str, polls: LoopPolls) -> Instrumented {
    match polls {
        LoopPolls::Off => Instrumented::unchanged(code),
        LoopPolls::Chunked => instrument_loops(code, true),
        LoopPolls::EveryIteration => instrument_loops(code, false),
    }
}

/// [`instrument_with`] in chunks, the default.
#[cfg(test)]
pub(crate) fn instrument(code: &str) -> Instrumented {
    instrument_loops(code, true)
}

/// The loops (and destructor bodies) of `code`, in the order they start, outer before inner.
fn loops_of(code: &str, chunked: bool) -> Vec<Loop> {
    const HEAD: &str = "fn __tch_kernel_cell() {\n";
    let wrapped = format!("{HEAD}{code}\n}}");
    let edition = evcxr::CELL_EDITION.parse().unwrap_or(Edition::Edition2021);
    let file = SourceFile::parse(&wrapped, edition).tree();
    let local = |offset: usize| offset.checked_sub(HEAD.len()).filter(|o| *o <= code.len());
    let mut loops: Vec<Loop> = file
        .syntax()
        .descendants()
        .filter_map(|node| Loop::of(&node, &local, chunked))
        .collect();
    loops.sort_by_key(|l| (l.range.start, std::cmp::Reverse(l.range.end)));
    loops
}

fn instrument_loops(code: &str, chunked: bool) -> Instrumented {
    let loops = loops_of(code, chunked);
    let mut out = Builder::default();
    emit(code, 0..code.len(), &loops, &mut out);
    if out.pieces.iter().all(|p| p.3) {
        return Instrumented::unchanged(code);
    }
    Instrumented {
        code: out.code,
        pieces: out.pieces,
        original: code.into(),
    }
}

/// The body of `fn drop` in an `impl Drop for ..`.
fn drop_body(node: &SyntaxNode) -> Option<ra_ap_syntax::TextRange> {
    let f = ast::Fn::cast(node.clone())?;
    (f.name()?.text() == "drop").then_some(())?;
    let imp = ast::Impl::cast(f.syntax().parent()?.parent()?)?;
    let ast::Type::PathType(t) = imp.trait_()? else {
        return None;
    };
    let is_drop = t.path()?.segment()?.name_ref()?.text() == "Drop";
    (is_drop && imp.excl_token().is_none()).then_some(())?;
    Some(f.body()?.syntax().text_range())
}

/// A loop to instrument (or a destructor's body): its whole range (label included), and how.
struct Loop {
    range: Range<usize>,
    how: How,
}

enum How {
    /// The body of a `Drop::drop` defined in the cell, run through `__tch_kernel_in_drop`
    /// (`child/items.rs`), so that it runs to its end while an interrupt unwinds.
    DropBody,
    /// A poll right after the body's `{` (`loop`, `while let`, and a `for` or `while` whose
    /// body has a `break`, which would only leave the chunk, and a `for` around another loop).
    /// A `for` or `while` (whose value is `()`, unlike a `loop`'s) is followed by `LOOP_END`
    /// too.
    Poll { at: usize, unit: bool },
    /// A `while COND { BODY }` cut into chunks: the offsets of its condition and the body's
    /// `{` end.
    WhileChunks { cond: Range<usize>, body: usize },
    /// A `for` over an integer range cut into sub-ranges: `LABEL: for PAT in A..B { BODY }`
    /// (or `A..=B`), with the offsets of `for`, the pattern, the range, and the body's `{`.
    RangeChunks {
        for_keyword: usize,
        pat: Range<usize>,
        range: Range<usize>,
        inclusive: bool,
        body: usize,
    },
    /// A `for` loop cut into chunks: `LABEL: for PAT in EXPR { BODY }`, with the offsets of
    /// `for`, the pattern, the iterable, and the body's inside (after `{`, before `}`).
    Chunks {
        for_keyword: usize,
        pat: Range<usize>,
        expr: Range<usize>,
        body: Range<usize>,
        pair: Option<Pair>,
    },
}

/// A `for` loop's iterable `A.zip(B)` or `A.enumerate()` whose A is a value (a call, a method
/// call, a reference), not a place that passing it would move: chunked by sub-slice when A and
/// B are slices' iterators (`__TchKernelPair` in the loop-chunks crate).
struct Pair {
    receiver: Range<usize>,
    /// The method's name, `zip` or `enumerate`.
    method: Range<usize>,
    /// B, for `zip`.
    arg: Option<Range<usize>>,
}

impl Pair {
    fn of(
        expr: &ast::Expr,
        range_of: &dyn Fn(ra_ap_syntax::TextRange) -> Option<Range<usize>>,
    ) -> Option<Pair> {
        let ast::Expr::MethodCallExpr(call) = expr else {
            return None;
        };
        let name = call.name_ref()?;
        let args: Vec<ast::Expr> = call.arg_list()?.args().collect();
        let method = name.text().to_string();
        let arg = match (method.as_str(), args.as_slice()) {
            ("zip", [b]) => Some(range_of(b.syntax().text_range())?),
            ("enumerate", []) => None,
            _ => return None,
        };
        let receiver = call.receiver()?;
        let is_value = matches!(
            receiver,
            ast::Expr::MethodCallExpr(_) | ast::Expr::CallExpr(_) | ast::Expr::RefExpr(_)
        );
        (is_value && call.generic_arg_list().is_none()).then_some(())?;
        Some(Pair {
            receiver: range_of(receiver.syntax().text_range())?,
            method: range_of(name.syntax().text_range())?,
            arg,
        })
    }
}

impl Loop {
    /// The loop (or destructor body) at `node`; every loop polls at each iteration unless
    /// `chunked`.
    fn of(
        node: &SyntaxNode,
        local: &dyn Fn(usize) -> Option<usize>,
        chunked: bool,
    ) -> Option<Loop> {
        if let Some(body) = drop_body(node) {
            let range = local(usize::from(body.start()))?..local(usize::from(body.end()))?;
            return Some(Loop {
                range,
                how: How::DropBody,
            });
        }
        let body = match node.kind() {
            SyntaxKind::LOOP_EXPR => ast::LoopExpr::cast(node.clone())?.loop_body(),
            SyntaxKind::WHILE_EXPR => ast::WhileExpr::cast(node.clone())?.loop_body(),
            SyntaxKind::FOR_EXPR => ast::ForExpr::cast(node.clone())?.loop_body(),
            _ => None,
        }?;
        let list = body.stmt_list()?;
        if in_const_context(node) || list.attrs().next().is_some() {
            return None;
        }
        let at = local(usize::from(list.l_curly_token()?.text_range().end()))?;
        let range = local(usize::from(node.text_range().start()))?
            ..local(usize::from(node.text_range().end()))?;
        let range_of = |r: ra_ap_syntax::TextRange| {
            Some(local(usize::from(r.start()))?..local(usize::from(r.end()))?)
        };
        // A `break` in a macro call (`select! { .. => break }`) is a token, not an expression.
        let has_break = body.syntax().descendants_with_tokens().any(|n| {
            n.kind() == SyntaxKind::BREAK_EXPR
                || n.kind() == SyntaxKind::BREAK_KW
                || n.as_token().is_some_and(|t| t.text() == "break")
        });
        // A `for` around another loop polls at each of its iterations, which cost little next
        // to the inner loop's: cutting a `for` into chunks is most of the code that polls add
        // (rustc's work for the polls of a cell with a `for` around three loops: a quarter
        // less). A `while` keeps its chunks, which are a counter: an outer `while` polled at
        // each iteration made a nested Collatz loop 5-20% slower (LLVM laid out its inner loop
        // differently).
        let for_around_loop = node.kind() == SyntaxKind::FOR_EXPR
            && body.syntax().descendants().any(|n| {
                matches!(
                    n.kind(),
                    SyntaxKind::LOOP_EXPR | SyntaxKind::WHILE_EXPR | SyntaxKind::FOR_EXPR
                )
            });
        let each_iteration = has_break || for_around_loop || !chunked;
        let while_chunks = ast::WhileExpr::cast(node.clone()).and_then(|w| {
            let cond = w.condition()?;
            let is_let = cond
                .syntax()
                .descendants()
                .any(|n| n.kind() == SyntaxKind::LET_EXPR);
            (!each_iteration && !is_let).then_some(())?;
            Some(How::WhileChunks {
                cond: range_of(cond.syntax().text_range())?,
                body: at,
            })
        });
        let range_chunks = ast::ForExpr::cast(node.clone()).and_then(|f| {
            let ast::Expr::RangeExpr(range) = f.iterable()? else {
                return None;
            };
            let (start, end) = (range.start()?, range.end()?);
            // Only a range with an integer literal end is surely one of integers, which the
            // chunk helper takes: the type of `a..b` is not known before type inference (in a
            // generic function it may be a `T` the helper's bounds do not cover).
            (!each_iteration
                && f.in_token().is_some()
                && (is_integer_literal(&start) || is_integer_literal(&end)))
            .then_some(())?;
            Some(How::RangeChunks {
                for_keyword: range_of(f.for_token()?.text_range())?.start,
                pat: range_of(f.pat()?.syntax().text_range())?,
                range: range_of(range.syntax().text_range())?,
                inclusive: range.op_kind()? == ast::RangeOp::Inclusive,
                body: at,
            })
        });
        let chunks = ast::ForExpr::cast(node.clone()).and_then(|f| {
            let close = local(usize::from(list.r_curly_token()?.text_range().start()))?;
            (!each_iteration && f.in_token().is_some()).then_some(())?;
            let iterable = f.iterable()?;
            Some(How::Chunks {
                for_keyword: range_of(f.for_token()?.text_range())?.start,
                pat: range_of(f.pat()?.syntax().text_range())?,
                expr: range_of(iterable.syntax().text_range())?,
                body: at..close,
                pair: Pair::of(&iterable, &range_of),
            })
        });
        Some(Loop {
            range,
            how: range_chunks
                .or(chunks)
                .or(while_chunks)
                .unwrap_or(How::Poll {
                    at,
                    unit: node.kind() != SyntaxKind::LOOP_EXPR,
                }),
        })
    }
}

/// `3`, `0usize`, `-1`: an integer literal, possibly negated.
fn is_integer_literal(expr: &ast::Expr) -> bool {
    let literal = match expr {
        ast::Expr::PrefixExpr(p) if p.op_kind() == Some(ast::UnaryOp::Neg) => match p.expr() {
            Some(ast::Expr::Literal(l)) => l,
            _ => return false,
        },
        ast::Expr::Literal(l) => l.clone(),
        _ => return false,
    };
    matches!(literal.kind(), ast::LiteralKind::IntNumber(_))
}

#[derive(Default)]
struct Builder {
    code: String,
    pieces: Vec<(usize, usize, usize, bool)>,
}

impl Builder {
    fn original(&mut self, code: &str, range: Range<usize>) {
        if range.start < range.end {
            self.pieces
                .push((self.code.len(), range.start, range.len(), true));
            self.code.push_str(&code[range]);
        }
    }

    fn generated(&mut self, text: &str, at: usize) {
        self.pieces.push((self.code.len(), at, text.len(), false));
        self.code.push_str(text);
    }
}

/// Copies `range` of `code` with its loops (sorted, outermost first) instrumented.
fn emit(code: &str, range: Range<usize>, loops: &[Loop], out: &mut Builder) {
    let mut pos = range.start;
    let mut i = 0;
    while i < loops.len() {
        let l = &loops[i];
        if l.range.start < pos || l.range.end > range.end {
            i += 1;
            continue;
        }
        let inner_end = i
            + 1
            + loops[i + 1..]
                .iter()
                .take_while(|m| m.range.start < l.range.end)
                .count();
        let inner = &loops[i + 1..inner_end];
        out.original(code, pos..l.range.start);
        match &l.how {
            How::DropBody => {
                out.generated("{ crate::__tch_kernel_in_drop(|| ", l.range.start);
                emit(code, l.range.clone(), inner, out);
                out.generated(") }", l.range.end);
            }
            How::Poll { at, unit } => {
                if *unit {
                    out.generated("{ ", l.range.start);
                }
                emit(code, l.range.start..*at, inner, out);
                out.generated(POLL_CALL, *at);
                emit(code, *at..l.range.end, inner, out);
                if *unit {
                    out.generated(&format!(" {LOOP_END} }}"), l.range.end);
                }
            }
            How::WhileChunks { cond, body } => {
                // { site; loop { poll; start; n = 0; LABEL: while n < size && (COND) {n += 1;
                //   BODY} if n < size { break } learn } }
                // COND is evaluated exactly as often as before: not when a chunk is full.
                out.generated(
                    &format!("{{ {SITE} loop {{ {POLL_CALL} {START} let mut __tch_n = 0usize; "),
                    l.range.start,
                );
                emit(code, l.range.start..cond.start, inner, out);
                out.generated("__tch_n < __tch_size && (", cond.start);
                emit(code, cond.clone(), inner, out);
                out.generated(")", cond.end);
                emit(code, cond.end..*body, inner, out);
                out.generated("__tch_n += 1;", *body);
                emit(code, *body..l.range.end, inner, out);
                out.generated(
                    &format!(" if __tch_n < __tch_size {{ break; }} {LEARN} }} {LOOP_END} }}"),
                    l.range.end,
                );
            }
            How::RangeChunks {
                for_keyword,
                pat,
                range,
                inclusive,
                body,
            } => {
                // The range evaluated once, as `for` does, then sub-ranges of `size`:
                //   { site; let r = A..B; let (mut lo, hi) = (r.start, r.end);
                //     while lo < hi { poll; let top = chunk_end(lo, hi, size); start;
                //       LABEL: for PAT in lo..top { BODY } lo = top; if lo < hi { learn } } }
                // and for `A..=B` (whose end may be the type's MAX):
                //   { site; let (mut lo, hi) = (A..=B).into_inner(); if lo <= hi { loop {
                //       poll; let top = chunk_last(lo, hi, size); start;
                //       LABEL: for PAT in lo..=top { BODY } if top == hi { break }
                //       lo = top + 1; learn } } }
                // The clock is read only when a chunk is not the last.
                // The user's label goes on the inner `for`, so `continue 'label` takes the next
                // item (a body with a `break` is not chunked).
                out.generated(
                    &if *inclusive {
                        format!("{{ {SITE} let (mut __tch_lo, __tch_hi) = (")
                    } else {
                        format!("{{ {SITE} let __tch_range = ")
                    },
                    l.range.start,
                );
                emit(code, range.clone(), inner, out);
                out.generated(
                    &if *inclusive {
                        format!(
                            ").into_inner(); if __tch_lo <= __tch_hi {{ loop {{ {POLL_CALL} let __tch_top = crate::__tch_kernel_chunk_last(__tch_lo, __tch_hi, __tch_size); {TIMED} "
                        )
                    } else {
                        format!(
                            "; let (mut __tch_lo, __tch_hi) = (__tch_range.start, __tch_range.end); while __tch_lo < __tch_hi {{ {POLL_CALL} let __tch_top = crate::__tch_kernel_chunk_end(__tch_lo, __tch_hi, __tch_size); {TIMED} "
                        )
                    },
                    l.range.start,
                );
                emit(code, l.range.start..*for_keyword, inner, out);
                out.generated("for ", *for_keyword);
                emit(code, pat.clone(), inner, out);
                out.generated(
                    if *inclusive {
                        " in __tch_lo..=__tch_top {"
                    } else {
                        " in __tch_lo..__tch_top {"
                    },
                    *body,
                );
                emit(code, *body..l.range.end, inner, out);
                out.generated(
                    &if *inclusive {
                        format!(
                            " if __tch_top == __tch_hi {{ break; }} __tch_lo = __tch_top + 1; {LEARN} }} }} {LOOP_END} }}"
                        )
                    } else {
                        format!(
                            " __tch_lo = __tch_top; if __tch_lo < __tch_hi {{ {LEARN} }} }} {LOOP_END} }}"
                        )
                    },
                    l.range.end,
                );
            }
            How::Chunks {
                for_keyword,
                pat,
                expr,
                body,
                pair,
            } => {
                // As `for` desugars (a match, so that EXPR's temporaries live through the
                // loop), a chunk at a time with one poll each. What a chunk is depends on the
                // iterator's type, so method resolution chooses (`child/items.rs`): the next
                // `size` items of a slice or a range as a sub-iterator of their own, which the
                // while runs to its end as a plain `for` would (`limit` is usize::MAX, `step`
                // 0); any other iterator itself, for `size` counted items:
                //   match IntoIterator::into_iter(EXPR) { mut it => { site; 'c: loop { poll;
                //     let (mut chunk, limit, step, last) = split(&mut it, size); start;
                //     let mut n = 0; LABEL: while n < limit { match chunk.next(&mut it) {
                //       Some(PAT) => {n += step; BODY}
                //       None => if last { break 'c } else { break } } } learn } } }
                // The user's label goes on the `while`, so `continue 'label` takes the next
                // item. A labelled chunk loop per loop: nested ones get their own label.
                // `A.zip(B)` and `A.enumerate()` (`Pair`, B is `()`) go through
                //   match (A, B) { (a, b) => match IntoIterator::into_iter({ use ..;
                //     (&&Pair::of(&a, &b)).__tch_zip(a, b, |a, b| a.zip(b)) }) { .. } }
                // which is the slices themselves if A and B are slices' iterators.
                let chunks = format!("'__tch_chunks{}", l.range.start);
                match pair {
                    None => {
                        out.generated("match ::std::iter::IntoIterator::into_iter(", l.range.start);
                        emit(code, expr.clone(), inner, out);
                    }
                    Some(pair) => emit_pair(code, pair, inner, out),
                }
                out.generated(
                    &format!(
                        ") {{ mut __tch_it => {{ {SITE} {chunks}: loop {{ {POLL_CALL} {SPLIT} {SPLIT_TIMED} let mut __tch_n = 0usize; "
                    ),
                    l.range.start,
                );
                emit(code, l.range.start..*for_keyword, inner, out);
                out.generated(
                    "while __tch_n < __tch_limit { match crate::__TchKernelChunkNext::__tch_next(&mut __tch_chunk, &mut __tch_it) { ::std::option::Option::Some(",
                    *for_keyword,
                );
                emit(code, pat.clone(), inner, out);
                out.generated(") => {__tch_n += __tch_step;", body.start);
                emit(code, body.clone(), inner, out);
                emit(code, body.end..l.range.end, inner, out);
                out.generated(
                    &format!(
                        " ::std::option::Option::None => if __tch_last {{ break {chunks} }} else {{ break }} }} }} {LEARN} }} {LOOP_END} }} }}{}",
                        if pair.is_some() { " }" } else { "" }
                    ),
                    l.range.end,
                );
            }
        }
        pos = l.range.end;
        i = inner_end;
    }
    out.original(code, pos..range.end);
}

/// The start of a chunked `for` over `A.zip(B)` or `A.enumerate()` (see `How::Chunks`), up to
/// the iterator; the `match` it opens is closed after the loop.
fn emit_pair(code: &str, pair: &Pair, inner: &[Loop], out: &mut Builder) {
    out.generated("match (", pair.receiver.start);
    emit(code, pair.receiver.clone(), inner, out);
    let (traits, call, args) = match &pair.arg {
        Some(arg) => {
            out.generated(", ", arg.start);
            emit(code, arg.clone(), inner, out);
            (
                "__TchKernelZipFast as _, __TchKernelZipAny as _",
                "__tch_zip(__tch_za, __tch_zb, |__tch_za, __tch_zb| __tch_za.",
                "(__tch_zb)) }",
            )
        }
        None => {
            out.generated(", ()", pair.method.end);
            (
                "__TchKernelEnumerateFast as _, __TchKernelEnumerateAny as _",
                "__tch_enumerate(__tch_za, |__tch_za| __tch_za.",
                "()) }",
            )
        }
    };
    let end = pair.arg.as_ref().map_or(pair.method.end, |a| a.end);
    out.generated(
        &format!(
            ") {{ (__tch_za, __tch_zb) => match ::std::iter::IntoIterator::into_iter({{ #[allow(unused_imports)] use crate::{{{traits}}}; (&&crate::__TchKernelPair::of(&__tch_za, &__tch_zb)).{call}"
        ),
        end,
    );
    emit(code, pair.method.clone(), inner, out);
    out.generated(args, end);
}

/// Inside a `const fn`, a `const` or `static` item or a `const { }` block, where no ordinary
/// function may be called.
fn in_const_context(node: &SyntaxNode) -> bool {
    node.ancestors().any(|a| match a.kind() {
        SyntaxKind::CONST | SyntaxKind::STATIC | SyntaxKind::CONST_ARG => true,
        SyntaxKind::BLOCK_EXPR => {
            ast::BlockExpr::cast(a).is_some_and(|b| b.const_token().is_some())
        }
        SyntaxKind::FN => ast::Fn::cast(a).is_some_and(|f| f.const_token().is_some()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polls(code: &str) -> usize {
        instrument(code).code.matches(POLL_CALL).count()
    }

    /// How each loop (and destructor) of `code` is instrumented, in the order they start. What
    /// the generated code does is checked by running it (`tests/child_life.rs`), not by its text.
    fn kinds(code: &str, chunked: bool) -> Vec<&'static str> {
        loops_of(code, chunked)
            .iter()
            .map(|l| match &l.how {
                How::DropBody => "drop body",
                How::Poll { .. } => "every iteration",
                How::WhileChunks { .. } => "while chunks",
                How::RangeChunks {
                    inclusive: false, ..
                } => "range chunks",
                How::RangeChunks {
                    inclusive: true, ..
                } => "inclusive range chunks",
                How::Chunks { pair: None, .. } => "iterator chunks",
                How::Chunks { pair: Some(_), .. } => "pair chunks",
            })
            .collect()
    }

    #[test]
    fn every_kind_of_loop_gets_a_poll() {
        let code = "let mut n = 0;\nfor i in 0..3 { n += i; }\nwhile n > 0 {\n    n -= 1;\n}\n'outer: loop { break 'outer; }\nlet f = |v: Vec<i32>| { for x in v {} };\nfn g() { loop { return; } }\nimpl S { fn h(&self) { while let Some(_) = None::<i32> {} } }\nfor j in a..b {}\nfor k in 1..=n { n += k; }";
        assert_eq!(polls(code), 8);
        assert_eq!(
            kinds(code, true),
            [
                "range chunks",
                "while chunks",
                "every iteration",
                "iterator chunks",
                "every iteration",
                "every iteration",
                // A range of unknown type goes through its iterator; one ending in a literal,
                // by ranges.
                "iterator chunks",
                "inclusive range chunks",
            ]
        );
        // The simple setting: every loop polls at every iteration.
        assert!(kinds(code, false).iter().all(|k| *k == "every iteration"));
        assert_eq!(
            instrument_with(code, LoopPolls::EveryIteration)
                .code
                .matches(POLL_CALL)
                .count(),
            8
        );
        assert!(instrument_with(code, LoopPolls::Off).is_unchanged());
    }

    #[test]
    fn zip_and_enumerate_of_a_value_go_through_the_pair() {
        let code = "for (x, y) in a.iter().zip(&b) { s += x * y; }\nfor (i, x) in v.iter_mut().enumerate() { *x += i; }";
        assert_eq!(kinds(code, true), ["pair chunks", "pair chunks"]);
        // A place (moved by the pair, only borrowed by a `zip(&self, ..)`), a turbofish, other
        // methods: as any iterator.
        for code in [
            "for p in it.zip(&b) {}",
            "for p in a.iter().zip::<&[u8]>(&b) {}",
            "for p in a.iter().zip(&b).rev() {}",
            "for p in a.iter().enumerate().skip(1) {}",
        ] {
            assert_eq!(kinds(code, true), ["iterator chunks"], "{code}");
        }
        // Errors in the pair point at the code as written.
        let inst = instrument(code);
        for (generated, pat) in [
            ("zip(__tch_zb)", "zip("),
            ("&b)", "&b)"),
            ("enumerate()", "enumerate("),
        ] {
            let at = inst.code.find(generated).unwrap();
            let (line, column) = line_column(&inst.code, at);
            assert_eq!(
                inst.original_position(line, column),
                line_column(code, code.find(pat).unwrap()),
                "{pat}"
            );
        }
    }

    #[test]
    fn a_for_with_a_break_polls_each_iteration_and_labels_stay() {
        assert_eq!(
            kinds("for i in 0..9 { if i == 3 { break; } }", true),
            ["every iteration"]
        );
        assert_eq!(
            kinds("let v = 'a: loop { break 'a 3; };", true),
            ["every iteration"]
        );
        // A `break` inside a macro call is a token, and counts.
        assert_eq!(
            kinds("for i in 0..9 { my_macro!(if i == 3 { break }); }", true),
            ["every iteration"]
        );
        let code = "'rows: for r in 0..2 { for c in 0..2 { continue 'rows; } }";
        assert_eq!(kinds(code, true), ["every iteration", "range chunks"]);
        let out = instrument(code).code;
        assert!(
            out.contains("'rows: for r in") && out.contains("continue 'rows;"),
            "{out}"
        );
        assert_eq!(out.matches(POLL_CALL).count(), 2, "{out}");
    }

    #[test]
    fn a_for_around_another_loop_polls_each_iteration() {
        let code = "for e in 0..3 { for x in &v { s += x; } }
while n > 0 { n -= 1; let f = |w: &[f64]| { let mut k = 0; while k < 2 { k += 1; } }; }
for b in loader { loop { break; } }";
        // A `while` around a loop keeps its chunks.
        assert_eq!(
            kinds(code, true),
            [
                "every iteration",
                "iterator chunks",
                "while chunks",
                "while chunks",
                "every iteration",
                "every iteration",
            ]
        );
        assert_eq!(polls(code), 6);
    }

    #[test]
    fn destructors_run_through_the_drop_wrapper() {
        let code = "struct F(u32);\nimpl Drop for F { fn drop(&mut self) { for i in 0..3 { self.0 += i; } } }\nimpl std::ops::Drop for G { fn drop(&mut self) {} }\nimpl F { fn drop(&mut self) {} }\nimpl Clone for F { fn drop(&self) {} }";
        // Only Drop's drop is wrapped (the wrapper's work is checked by running it).
        assert_eq!(
            kinds(code, true),
            ["drop body", "range chunks", "drop body"]
        );
        let out = instrument(code).code;
        assert_eq!(out.matches("__tch_kernel_in_drop").count(), 2, "{out}");
        assert!(out.contains("impl F { fn drop(&mut self) {} }"), "{out}");
        // Errors inside still point at the code as written.
        let inst = instrument(code);
        let at = inst.code.find("self.0 += i").unwrap();
        let (line, column) = line_column(&inst.code, at);
        assert_eq!(
            inst.original_position(line, column),
            line_column(code, code.find("self.0 += i").unwrap())
        );
    }

    #[test]
    fn const_contexts_and_code_without_loops_are_left_alone() {
        assert_eq!(
            polls("const fn f() -> u32 { let mut i = 0; while i < 3 { i += 1; } i }"),
            0
        );
        assert_eq!(
            polls("const N: u32 = { let mut i = 0; loop { break i; } };"),
            0
        );
        assert_eq!(polls("let x = 1 + 1;\nx"), 0);
        assert!(instrument("let x = 1;").is_unchanged());
        // Loops written inside a macro call are tokens, not parsed: left as they are.
        assert_eq!(
            polls("println!(\"{}\", { let mut s = 0; for i in 0..3 { s += i; } s });"),
            0
        );
    }

    #[test]
    fn positions_map_back_to_the_cell_as_written() {
        let code =
            "let a = 1;\nfor i in v.iter() { let x: u8 = *i; }\nwhile a > 2 { let y: u8 = a; }";
        let inst = instrument(code);
        let find = |text: &str, pat: &str| {
            let at = text.find(pat).unwrap();
            line_column(text, at)
        };
        for pat in ["*i; }", "v.iter()", "a; }", "let a"] {
            let (line, column) = find(&inst.code, pat);
            assert_eq!(
                inst.original_position(line, column),
                find(code, pat),
                "{pat}"
            );
        }
        // Inside generated code: where it stands in the cell.
        let (line, column) = find(&inst.code, "__tch_n += __tch_step;");
        assert_eq!(inst.original_position(line, column), find(code, " let x"));
    }
}
