//! What `:vars` shows: each variable's name, type and a short value. The kernel compiles one
//! cell that calls [`table`] with `(&&&&Short(&variable)).short()` for every variable; method
//! resolution picks the most specific summary there is (tensors and var stores by their shape,
//! rich displays by their text, `Debug` values by their Debug form, anything else by "…").

use crate::display::{MimeBundle, RichDisplay, html_escape};

/// Longest short value shown, in characters.
const SHORT_CHARS: usize = 60;

/// A borrowed variable, to be summarised.
pub struct Short<'a, T: ?Sized>(pub &'a T);

/// Summaries of types the kernel knows (tensors, var stores).
pub trait ViaKnown {
    fn short(&self) -> String;
}

/// Summaries of anything with a rich display: its text form.
pub trait ViaRich {
    fn short(&self) -> String;
}

/// Summaries of `Debug` values.
pub trait ViaDebug {
    fn short(&self) -> String;
}

/// Values with neither.
pub trait ViaNothing {
    fn short(&self) -> String;
}

impl<T: RichDisplay + ?Sized> ViaRich for &&Short<'_, T> {
    fn short(&self) -> String {
        let bundle = self.0.mime_bundle();
        shorten(bundle.get("text/plain").unwrap_or("…"))
    }
}

impl<T: std::fmt::Debug + ?Sized> ViaDebug for &Short<'_, T> {
    fn short(&self) -> String {
        shorten(&format!("{:?}", self.0))
    }
}

impl<T: ?Sized> ViaNothing for Short<'_, T> {
    fn short(&self) -> String {
        "…".to_owned()
    }
}

#[cfg(feature = "tch")]
impl ViaKnown for &&&Short<'_, tch::Tensor> {
    fn short(&self) -> String {
        let t = self.0;
        if !t.defined() {
            return "undefined".to_owned();
        }
        let mut s = format!(
            "{:?} {} on {}",
            t.size(),
            crate::tensor::dtype_name(t.kind()),
            crate::tensor::device_name(t.device())
        );
        if t.requires_grad() {
            s.push_str(", requires_grad");
        }
        s
    }
}

#[cfg(feature = "tch")]
impl ViaKnown for &&&Short<'_, tch::nn::VarStore> {
    fn short(&self) -> String {
        let variables = self.0.variables();
        let parameters: i64 = variables.values().map(|t| t.numel() as i64).sum();
        format!(
            "{} tensors, {parameters} parameters, on {}",
            variables.len(),
            crate::tensor::device_name(self.0.device())
        )
    }
}

fn shorten(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    let more = text.lines().nth(1).is_some();
    let mut out: String = line.chars().take(SHORT_CHARS).collect();
    if more || line.chars().count() > SHORT_CHARS {
        out.push('…');
    }
    out
}

/// The `:vars` table.
pub struct VarsTable(Vec<(&'static str, &'static str, String)>);

/// The table of `(name, type, short value)` rows, sorted by name.
pub fn table(mut rows: Vec<(&'static str, &'static str, String)>) -> VarsTable {
    rows.sort_by(|a, b| a.0.cmp(b.0));
    VarsTable(rows)
}

impl RichDisplay for VarsTable {
    fn mime_bundle(&self) -> MimeBundle {
        if self.0.is_empty() {
            return MimeBundle::new().with("text/plain", "no variables");
        }
        let width = |f: fn(&(&str, &str, String)) -> usize| self.0.iter().map(f).max().unwrap_or(0);
        let (name_w, type_w) = (width(|r| r.0.len()), width(|r| r.1.len()));
        let mut text = String::new();
        let mut html = String::from(
            "<table><thead><tr><th style=\"text-align:left\">name</th><th style=\"text-align:left\">type</th><th style=\"text-align:left\">value</th></tr></thead><tbody>",
        );
        for (name, ty, value) in &self.0 {
            text.push_str(&format!("{name:name_w$}  {ty:type_w$}  {value}\n"));
            html.push_str(&format!(
                "<tr><td style=\"text-align:left\"><code>{}</code></td><td style=\"text-align:left\"><code>{}</code></td><td style=\"text-align:left\">{}</td></tr>",
                html_escape(name),
                html_escape(ty),
                html_escape(value)
            ));
        }
        html.push_str("</tbody></table>");
        MimeBundle::new()
            .with("text/plain", text.trim_end().to_owned())
            .with("text/html", html)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::display::Html;

    struct Opaque;

    // The borrows pick the summary (the form the kernel's :vars cell uses), which clippy
    // cannot see.
    #[allow(clippy::needless_borrow)]
    #[test]
    fn the_most_specific_summary_wins() {
        assert_eq!((&&&&Short(&Html("<b>x</b>"))).short(), "<HTML>");
        assert_eq!((&&&&Short(&vec![1, 2])).short(), "[1, 2]");
        assert_eq!((&&&&Short(&Opaque)).short(), "…");
        let long = "x".repeat(100);
        assert_eq!((&&&&Short(&long)).short().chars().count(), SHORT_CHARS + 1);
    }

    #[test]
    fn the_table_has_every_row_in_text_and_html() {
        let t = table(vec![
            ("b", "i32", "2".into()),
            ("a", "String", "\"<\"".into()),
        ]);
        let b = t.mime_bundle();
        assert_eq!(b.get("text/plain"), Some("a  String  \"<\"\nb  i32     2"));
        assert!(b.get("text/html").unwrap().contains("&quot;&lt;&quot;"));
    }
}
