//! `progress(iter)`: a tqdm-like bar in one output that updates in place.

use crate::display::{DisplayHandle, MimeBundle, RichDisplay, html_escape};
use crate::interrupt::check_interrupt;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// At most this many redraws per second per bar: far below Jupyter's IOPub rate limits
/// (1000 messages/s), and smooth enough to read.
const MIN_REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// Outside a notebook (a batch job's log) redraw at most every 10 s.
const BATCH_REDRAW_INTERVAL: Duration = Duration::from_secs(10);

thread_local! {
    /// The postfixes and unit counts of the bars being iterated, innermost last (for
    /// `progress_postfix` and `progress_units`).
    static ACTIVE: RefCell<Vec<(Postfix, Units)>> = const { RefCell::new(Vec::new()) };
}

/// Wraps an iterator in a progress bar: one output showing count, percentage, rate, elapsed
/// time, ETA and a postfix (e.g. the loss), redrawn at most 10 times a second. Each step also
/// checks for an interrupt, so a training loop stops cleanly at the next step and the model
/// survives.
///
/// ```ignore
/// for batch in progress(0..n_batches).desc("epoch 1") {
///     let loss = train_step(batch);
///     progress_postfix(format!("loss={loss:.4}"));
/// }
/// ```
pub fn progress<I: IntoIterator>(iter: I) -> Progress<I::IntoIter> {
    let inner = iter.into_iter();
    let (low, high) = inner.size_hint();
    let total = (Some(low) == high).then_some(low);
    Progress {
        inner,
        total,
        desc: String::new(),
        n: 0,
        started: None,
        last_draw: None,
        handle: DisplayHandle::new(),
        postfix: Postfix::default(),
        units: Units::default(),
        done: false,
        registered: false,
        // In a job of several ranks only rank 0 draws (as tqdm's `disable=rank != 0`).
        quiet: !crate::rank::is_main_rank(),
    }
}

/// Sets the postfix text (e.g. `loss=0.123`) of the innermost progress bar being iterated.
pub fn progress_postfix(text: impl std::fmt::Display) {
    ACTIVE.with(|active| {
        if let Some((postfix, _)) = active.borrow().last() {
            postfix.set(text);
        }
    });
}

/// Counts `n` units (e.g. `"images"`) in the innermost progress bar being iterated, which then
/// also shows their rate (`2310.4 images/s`). An iterator of batches calls it as it yields each
/// batch, so that `progress(loader)` shows images per second without the loop doing anything.
pub fn progress_units(n: usize, unit: &'static str) {
    ACTIVE.with(|active| {
        if let Some((_, units)) = active.borrow().last() {
            units.add(n, unit);
        }
    });
}

/// A shared count of the units a bar's items hold (images in batches, say).
#[derive(Clone, Debug, Default)]
struct Units(Rc<RefCell<Option<(usize, &'static str)>>>);

impl Units {
    fn add(&self, n: usize, unit: &'static str) {
        let mut units = self.0.borrow_mut();
        let count = units.map_or(0, |(count, _)| count);
        *units = Some((count + n, unit));
    }

    fn get(&self) -> Option<(usize, &'static str)> {
        *self.0.borrow()
    }
}

/// A shared handle on a bar's postfix text.
#[derive(Clone, Debug, Default)]
pub struct Postfix(Rc<RefCell<String>>);

impl Postfix {
    pub fn set(&self, text: impl std::fmt::Display) {
        *self.0.borrow_mut() = text.to_string();
    }

    pub fn get(&self) -> String {
        self.0.borrow().clone()
    }
}

/// The iterator returned by [`progress`].
pub struct Progress<I> {
    inner: I,
    total: Option<usize>,
    desc: String,
    n: usize,
    started: Option<Instant>,
    last_draw: Option<Instant>,
    handle: DisplayHandle,
    postfix: Postfix,
    units: Units,
    done: bool,
    registered: bool,
    quiet: bool,
}

impl<I> Progress<I> {
    /// A label in front of the bar.
    pub fn desc(mut self, desc: impl Into<String>) -> Self {
        self.desc = desc.into();
        self
    }

    /// The number of steps, when the iterator cannot tell.
    pub fn total(mut self, total: usize) -> Self {
        self.total = Some(total);
        self
    }

    /// A handle to set this bar's postfix from inside the loop.
    pub fn postfix(&self) -> Postfix {
        self.postfix.clone()
    }

    fn state(&self, now: Instant) -> BarState {
        BarState {
            desc: self.desc.clone(),
            n: self.n,
            total: self.total,
            elapsed: self.started.map(|s| now - s).unwrap_or_default(),
            postfix: self.postfix.get(),
            units: self.units.get(),
            finished: self.done,
        }
    }

    fn draw(&mut self, now: Instant, first: bool) {
        if self.quiet {
            return;
        }
        // Outside a notebook each redraw is a line in a log: one every 10 s is plenty.
        if !crate::wire::in_kernel()
            && !first
            && !self.done
            && self
                .last_draw
                .is_some_and(|t| now - t < BATCH_REDRAW_INTERVAL)
        {
            return;
        }
        let state = self.state(now);
        if first {
            self.handle.display(&state);
        } else {
            self.handle.update(&state);
        }
        self.last_draw = Some(now);
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if self.registered {
            ACTIVE.with(|active| {
                active.borrow_mut().pop();
            });
            self.registered = false;
        }
        if self.started.is_some() {
            self.draw(Instant::now(), false);
        }
    }
}

impl<I: Iterator> Iterator for Progress<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        if self.done {
            return None;
        }
        let now = Instant::now();
        if self.started.is_none() {
            self.started = Some(now);
            ACTIVE.with(|active| {
                active
                    .borrow_mut()
                    .push((self.postfix.clone(), self.units.clone()))
            });
            self.registered = true;
            self.draw(now, true);
        } else {
            // The previous item has been processed.
            self.n += 1;
            // Stop here, between two steps, if the user interrupted the cell. The bar is
            // redrawn (by `Drop`) with the steps actually done.
            check_interrupt();
            if self
                .last_draw
                .is_none_or(|t| now - t >= MIN_REDRAW_INTERVAL)
            {
                self.draw(now, false);
            }
        }
        let item = self.inner.next();
        if item.is_none() {
            self.finish();
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<I> Drop for Progress<I> {
    /// A loop left early (`break`, `?`, a panic or an interrupt) still shows where it stopped.
    fn drop(&mut self) {
        self.finish();
    }
}

/// What one redraw shows.
#[derive(Clone, Debug, PartialEq)]
struct BarState {
    desc: String,
    n: usize,
    total: Option<usize>,
    elapsed: Duration,
    postfix: String,
    /// Units counted by `progress_units` (images, say) and their name.
    units: Option<(usize, &'static str)>,
    finished: bool,
}

impl BarState {
    fn rate(&self) -> Option<f64> {
        let secs = self.elapsed.as_secs_f64();
        (secs > 0.0 && self.n > 0).then(|| self.n as f64 / secs)
    }

    fn eta(&self) -> Option<Duration> {
        let (total, rate) = (self.total?, self.rate()?);
        Some(Duration::from_secs_f64(
            total.saturating_sub(self.n) as f64 / rate,
        ))
    }

    /// `[00:02<00:03, 20.10it/s, loss=0.3]`
    fn stats(&self) -> String {
        let mut s = format!("[{}", clock(self.elapsed));
        if self.total.is_some() {
            s.push('<');
            s.push_str(&self.eta().map(clock).unwrap_or_else(|| "?".to_owned()));
        }
        match self.rate() {
            Some(r) if r >= 1.0 => s.push_str(&format!(", {r:.2}it/s")),
            Some(r) => s.push_str(&format!(", {:.2}s/it", 1.0 / r)),
            None => s.push_str(", ?it/s"),
        }
        let secs = self.elapsed.as_secs_f64();
        if let Some((count, unit)) = self.units.filter(|_| secs > 0.0) {
            s.push_str(&format!(", {:.1} {unit}/s", count as f64 / secs));
        }
        if !self.postfix.is_empty() {
            s.push_str(", ");
            s.push_str(&self.postfix);
        }
        s.push(']');
        s
    }

    fn text(&self) -> String {
        let desc = if self.desc.is_empty() {
            String::new()
        } else {
            format!("{}: ", self.desc)
        };
        match self.total {
            Some(total) if total > 0 => {
                let frac = (self.n as f64 / total as f64).min(1.0);
                const WIDTH: usize = 20;
                let eighths = (frac * (WIDTH * 8) as f64).round() as usize;
                let mut bar = "█".repeat(eighths / 8);
                if !eighths.is_multiple_of(8) && eighths / 8 < WIDTH {
                    bar.push([' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8]);
                }
                let pad = WIDTH - bar.chars().count();
                format!(
                    "{desc}{:3.0}%|{bar}{}| {}/{total} {}",
                    frac * 100.0,
                    " ".repeat(pad),
                    self.n,
                    self.stats()
                )
            }
            _ => format!("{desc}{} {}", self.n, self.stats()),
        }
    }

    fn html(&self) -> String {
        let desc = html_escape(&self.desc);
        let bar = match self.total {
            Some(total) if total > 0 => format!(
                "<progress value=\"{}\" max=\"{total}\" style=\"width:22em;height:1.1em\"></progress>\
                 <span>{:3.0}% {}/{total}</span>",
                self.n.min(total),
                (self.n as f64 / total as f64).min(1.0) * 100.0,
                self.n
            ),
            _ => format!("<span>{}</span>", self.n),
        };
        format!(
            "<div style=\"display:flex;gap:0.6em;align-items:center;font-family:monospace\">\
             <span>{desc}</span>{bar}<span>{}</span></div>",
            html_escape(&self.stats())
        )
    }
}

impl RichDisplay for BarState {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new()
            .with("text/plain", self.text())
            .with("text/html", self.html())
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize, total: Option<usize>, secs: f64) -> BarState {
        BarState {
            desc: "train".into(),
            n,
            total,
            elapsed: Duration::from_secs_f64(secs),
            postfix: "loss=0.5".into(),
            units: None,
            finished: false,
        }
    }

    #[test]
    fn text_is_like_tqdm() {
        assert_eq!(
            state(45, Some(100), 2.0).text(),
            "train:  45%|█████████           | 45/100 [00:02<00:02, 22.50it/s, loss=0.5]"
        );
        assert_eq!(
            state(3, None, 6.0).text(),
            "train: 3 [00:06, 2.00s/it, loss=0.5]"
        );
        assert_eq!(
            state(0, Some(10), 0.0).text(),
            "train:   0%|                    | 0/10 [00:00<?, ?it/s, loss=0.5]"
        );
    }

    #[test]
    fn html_has_a_progress_element_and_escapes() {
        let mut s = state(5, Some(10), 1.0);
        s.desc = "<b>".into();
        let html = s.html();
        assert!(html.contains("<progress value=\"5\" max=\"10\""));
        assert!(html.contains("&lt;b&gt;"));
    }

    #[test]
    fn iterates_everything_and_counts() {
        let items: Vec<i32> = progress(vec![1, 2, 3]).desc("x").collect();
        assert_eq!(items, vec![1, 2, 3]);
        let mut p = progress(0..4);
        assert_eq!(p.total, Some(4));
        for _ in p.by_ref() {}
        assert_eq!(p.n, 4);
        assert!(p.done);
    }

    #[test]
    fn postfix_goes_to_the_innermost_bar() {
        let outer = progress(0..2);
        let outer_postfix = outer.postfix();
        for _ in outer {
            let inner = progress(0..2);
            let inner_postfix = inner.postfix();
            for _ in inner {
                progress_postfix("inner");
            }
            assert_eq!(inner_postfix.get(), "inner");
            progress_postfix("outer");
        }
        assert_eq!(outer_postfix.get(), "outer");
    }

    #[test]
    fn units_counted_by_the_iterator_show_their_rate() {
        let mut s = state(2, Some(4), 2.0);
        s.units = Some((128, "images"));
        assert_eq!(
            s.text(),
            "train:  50%|██████████          | 2/4 [00:02<00:02, 1.00it/s, 64.0 images/s, loss=0.5]"
        );
        // An iterator that reports its batches' sizes counts into the bar that wraps it.
        let batches = [3usize, 5]
            .into_iter()
            .inspect(|n| progress_units(*n, "images"));
        let mut bar = progress(batches);
        for _ in bar.by_ref() {}
        assert_eq!(bar.units.get(), Some((8, "images")));
    }
}
