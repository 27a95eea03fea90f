//! What `:vars` shows: each variable's name, type and a short value. The kernel compiles one
//! cell that calls [`table`] with `(&&&&Short(&variable)).short()` for every variable; method
//! resolution picks the most specific summary there is (tensors and var stores by their shape,
//! rich displays by their text, `Debug` values by their Debug form, anything else by "…").

use crate::display::{MimeBundle, RichDisplay, html_escape};

/// Longest short value shown, in characters.
const SHORT_CHARS: usize = 60;

/// The largest tensor (in host memory) whose values the debugger's rich view previews.
#[cfg(feature = "tch")]
const PREVIEW_MAX_ELEMENTS: usize = 100_000;

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

/// A variable's description for the debugger's Variables panel, chosen by its type at the cell
/// that stores it (`__tch_variable_describer!`): JSON with `value` (the short value), and a
/// tensor's `html` preview or a VarStore's `children` (its parameters and their shapes). The
/// evaluation process runs it after each cell for the variables the cell stored.
pub type Describer = fn(&dyn std::any::Any) -> String;

/// The type of a value, for choosing its describer by method resolution: tensors and var stores
/// ([`DescribeKnown`]), then `Debug` values, then rich displays (their text; after Debug, as a
/// plot renders its image for it), then anything.
pub struct Describe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> Describe<T> {
    pub fn of(_: &T) -> Describe<T> {
        Describe(std::marker::PhantomData)
    }
}

pub trait DescribeKnown {
    fn describer(&self) -> Describer;
}

pub trait DescribeDebug {
    fn describer(&self) -> Describer;
}

pub trait DescribeRich {
    fn describer(&self) -> Describer;
}

pub trait DescribeNothing {
    fn describer(&self) -> Describer;
}

fn described(value: String) -> String {
    serde_json::json!({ "value": value }).to_string()
}

/// Runs a describer's work with its panics caught and unreported: a `Debug` that panics
/// describes its value as "…" instead of showing as the cell's error (the evaluation process's
/// panic hook reports every panic). Describers run between cells, on the main thread.
fn quietly(describe: impl FnOnce() -> String) -> String {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(describe));
    std::panic::set_hook(hook);
    out.unwrap_or_else(|_| described("…".to_owned()))
}

impl<T: std::fmt::Debug + 'static> DescribeDebug for &&Describe<T> {
    fn describer(&self) -> Describer {
        |v| quietly(|| described(v.downcast_ref::<T>().map_or_else(String::new, short_debug)))
    }
}

impl<T: RichDisplay + 'static> DescribeRich for &Describe<T> {
    fn describer(&self) -> Describer {
        |v| {
            quietly(|| {
                let text = v.downcast_ref::<T>().map(|v| {
                    let bundle = v.mime_bundle();
                    shorten(bundle.get("text/plain").unwrap_or("…"))
                });
                described(text.unwrap_or_default())
            })
        }
    }
}

impl<T: ?Sized> DescribeNothing for Describe<T> {
    fn describer(&self) -> Describer {
        |_| described("…".to_owned())
    }
}

#[cfg(feature = "tch")]
impl DescribeKnown for &&&Describe<tch::Tensor> {
    fn describer(&self) -> Describer {
        |v| {
            quietly(|| {
                let Some(t) = v.downcast_ref::<tch::Tensor>() else {
                    return described(String::new());
                };
                // The preview (values, min/max/mean) copies and reduces the tensor: only for a
                // small one in host memory, since this runs after every cell that stores it.
                let short = (&&&&Short(t)).short();
                let html = if t.device() == tch::Device::Cpu && t.numel() <= PREVIEW_MAX_ELEMENTS {
                    crate::tensor::tensor_html(t)
                } else {
                    format!(
                        "<b>Tensor</b> <code>{}</code> (no preview of its values here: display it in a cell)",
                        crate::display::html_escape(&short)
                    )
                };
                serde_json::json!({ "value": short, "html": html }).to_string()
            })
        }
    }
}

#[cfg(feature = "tch")]
impl DescribeKnown for &&&Describe<tch::nn::VarStore> {
    fn describer(&self) -> Describer {
        |v| {
            quietly(|| {
                let Some(vs) = v.downcast_ref::<tch::nn::VarStore>() else {
                    return described(String::new());
                };
                let mut children: Vec<(String, String)> = vs
                    .variables()
                    .into_iter()
                    .map(|(name, t)| (name, (&&&&Short(&t)).short()))
                    .collect();
                children.sort();
                serde_json::json!({ "value": (&&&&Short(vs)).short(), "children": children })
                    .to_string()
            })
        }
    }
}

/// `Debug` of `value`, cut at [`SHORT_CHARS`] without formatting the rest (a vector of a
/// million numbers stops after its first few).
fn short_debug<T: std::fmt::Debug + ?Sized>(value: &T) -> String {
    struct Capped(String);
    impl std::fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.push_str(s);
            if self.0.chars().count() > SHORT_CHARS {
                Err(std::fmt::Error)
            } else {
                Ok(())
            }
        }
    }
    let mut out = Capped(String::new());
    let _ = std::fmt::write(&mut out, format_args!("{value:?}"));
    shorten(&out.0)
}

/// Names a variable's describer (see [`Describer`]); the kernel puts it in the statements that
/// store variables.
#[doc(hidden)]
#[macro_export]
macro_rules! __tch_variable_describer {
    ($value:expr) => {{
        #[allow(unused_imports)]
        use $crate::kernel_vars::{
            DescribeDebug as _, DescribeKnown as _, DescribeNothing as _, DescribeRich as _,
        };
        (&&&&$crate::kernel_vars::Describe::of($value)).describer()
    }};
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
