//! Rich output: MIME bundles, `display`, display handles and the wrapper types.

use crate::wire;
use base64::Engine;
use child_protocol::{BEGIN_CONTENT, END_CONTENT};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// One output in several representations (`text/plain`, `text/html`, `image/png` in base64,
/// ...); the frontend shows the richest it supports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MimeBundle {
    entries: Vec<(String, String)>,
}

impl MimeBundle {
    pub fn new() -> MimeBundle {
        MimeBundle::default()
    }

    /// Adds (or replaces) one representation. Binary types (`image/png`) are base64 text.
    pub fn with(mut self, mime: impl Into<String>, content: impl Into<String>) -> MimeBundle {
        let mime = mime.into();
        self.entries.retain(|(m, _)| *m != mime);
        self.entries.push((mime, content.into()));
        self
    }

    pub fn get(&self, mime: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(m, _)| m == mime)
            .map(|(_, c)| c.as_str())
    }

    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}

/// Something a notebook can show. Implement it for your own types to make them display
/// richly, both through [`display`] and as a cell's last value.
pub trait RichDisplay {
    fn mime_bundle(&self) -> MimeBundle;
}

impl<T: RichDisplay + ?Sized> RichDisplay for &T {
    fn mime_bundle(&self) -> MimeBundle {
        (**self).mime_bundle()
    }
}

impl<T: RichDisplay + ?Sized> RichDisplay for Box<T> {
    fn mime_bundle(&self) -> MimeBundle {
        (**self).mime_bundle()
    }
}

/// How the engine shows a cell's last value: it calls `(&value).evcxr_display()`. This impl
/// (for `T`) wins over the kernel's Debug fallback (for `&T`), so every [`RichDisplay`] type
/// shows richly as a last value too.
#[doc(hidden)]
pub trait EvcxrDisplay {
    fn evcxr_display(&self);
}

impl<T: RichDisplay + ?Sized> EvcxrDisplay for T {
    fn evcxr_display(&self) {
        let bundle = self.mime_bundle();
        if !wire::in_kernel() {
            wire::emit("result", "", bundle.entries());
            return;
        }
        let mut out = std::io::stdout().lock();
        for (mime, content) in bundle.entries() {
            let _ = writeln!(out, "{BEGIN_CONTENT} {mime}\n{content}\n{END_CONTENT}");
        }
        let _ = out.flush();
    }
}

/// Prints a value's Debug form: what a cell's last value shows when it has no [`RichDisplay`].
/// Implemented for `&T`, so that [`EvcxrDisplay`] (for `T`) wins where both apply; programs
/// exported with `tch-kernel export` use the pair as the kernel does.
#[doc(hidden)]
pub trait DebugFallback {
    fn evcxr_display(&self);
}

impl<T: std::fmt::Debug + ?Sized> DebugFallback for &T {
    fn evcxr_display(&self) {
        if std::any::type_name::<T>() != "()" {
            println!("{:?}", *self);
        }
    }
}

/// Shows `value` now, as a separate output of this cell, in order with printed text: a value
/// (`display(Html("<b>hi</b>"))`, `display(t)`) or a reference (`display(&t)`, which keeps `t`).
/// The handle updates that output in place later (`update_display_data`); as a cell's last
/// value it shows nothing, as in IPython.
pub fn display<T: RichDisplay>(value: T) -> DisplayHandle {
    let handle = DisplayHandle::new();
    handle.display(value);
    handle
}

/// Shows any `Debug` value as text, like a cell's last value.
pub fn display_debug<T: std::fmt::Debug + ?Sized>(value: &T) -> DisplayHandle {
    display(Text(format!("{value:?}")))
}

/// Shows raw content of one MIME type (base64 for binary types).
pub fn display_mime(mime: &str, content: &str) {
    wire::emit("display", "", &[(mime.to_owned(), content.to_owned())]);
}

/// Clears this cell's output now.
pub fn clear_output() {
    wire::emit("clear", "", &[]);
}

/// Clears this cell's output when the next output arrives, so a redrawn plot does not flicker
/// (IPython's `clear_output(wait=True)`).
pub fn clear_output_wait() {
    wire::emit("clear-wait", "", &[]);
}

/// One output that can be shown and then updated in place, like IPython's
/// `display(..., display_id=True)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayHandle {
    id: String,
}

impl Default for DisplayHandle {
    fn default() -> Self {
        DisplayHandle::new()
    }
}

impl DisplayHandle {
    /// A new display id, unique in this process (and practically across kernels).
    pub fn new() -> DisplayHandle {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        DisplayHandle {
            id: format!("{:x}-{:x}-{n}", std::process::id(), nanos),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Shows `value` (or `&value`) as a new output carrying this handle's id.
    pub fn display<T: RichDisplay>(&self, value: T) {
        wire::emit("display", &self.id, value.mime_bundle().entries());
    }

    /// Replaces every output shown with this handle's id, wherever it is in the notebook:
    /// `handle.update(Markdown(format!("step {i}")))`, or `handle.update(&plot)`.
    pub fn update<T: RichDisplay>(&self, value: T) {
        wire::emit("update", &self.id, value.mime_bundle().entries());
    }
}

// The wrappers hold any text (`Html("<b>hi</b>")`, `Html(format!(..))`); `String` is the default
// so that `Html` alone names the type in a signature.

/// HTML, shown rendered: `display(Html("<b>hi</b>"))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Html<S = String>(pub S);

/// Markdown, shown rendered (with LaTeX math in `$..$`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Markdown<S = String>(pub S);

/// An SVG image (the document text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svg<S = String>(pub S);

/// A PNG image (the encoded file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Png(pub Vec<u8>);

/// Plain text, shown as is (a `String` as a cell's last value shows quoted, like its Debug).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text<S = String>(pub S);

impl<S: AsRef<str>> RichDisplay for Html<S> {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new()
            .with("text/plain", "<HTML>")
            .with("text/html", self.0.as_ref())
    }
}

impl<S: AsRef<str>> RichDisplay for Markdown<S> {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new()
            .with("text/plain", self.0.as_ref())
            .with("text/markdown", self.0.as_ref())
    }
}

impl<S: AsRef<str>> RichDisplay for Svg<S> {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new()
            .with("text/plain", "<SVG image>")
            .with("image/svg+xml", self.0.as_ref())
    }
}

/// A handle as a cell's last value (`display(..)` without `;`) shows nothing: the output it
/// names is already there.
impl RichDisplay for DisplayHandle {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new()
    }
}

impl Png {
    /// Width and height from the PNG header, if it is one.
    pub fn size(&self) -> Option<(u32, u32)> {
        let header = self.0.get(..24)?;
        if &header[..8] != b"\x89PNG\r\n\x1a\n" {
            return None;
        }
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Some((be(&header[16..20]), be(&header[20..24])))
    }

    /// Writes the image to a file.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, &self.0)
    }
}

impl RichDisplay for Png {
    fn mime_bundle(&self) -> MimeBundle {
        let text = match self.size() {
            Some((w, h)) => format!("<PNG image {w}x{h}>"),
            None => "<PNG image>".to_owned(),
        };
        MimeBundle::new().with("text/plain", text).with(
            "image/png",
            base64::engine::general_purpose::STANDARD.encode(&self.0),
        )
    }
}

impl<S: AsRef<str>> RichDisplay for Text<S> {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new().with("text/plain", self.0.as_ref())
    }
}

/// Escapes text for HTML (element content and attribute values).
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let _ = pulldown_cmark_escape::escape_html(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_replace_a_mime_type_rather_than_repeat_it() {
        let b = MimeBundle::new()
            .with("text/plain", "a")
            .with("text/html", "<b>")
            .with("text/plain", "b");
        assert_eq!(b.entries().len(), 2);
        assert_eq!(b.get("text/plain"), Some("b"));
    }

    #[test]
    fn handles_have_distinct_ids() {
        assert_ne!(DisplayHandle::new(), DisplayHandle::new());
    }

    #[test]
    fn png_bundles_are_base64_with_the_size_in_text() {
        // A 1x1 PNG header is enough for the size.
        let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        bytes.extend(3u32.to_be_bytes());
        bytes.extend(2u32.to_be_bytes());
        let b = Png(bytes.clone()).mime_bundle();
        assert_eq!(b.get("text/plain"), Some("<PNG image 3x2>"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.get("image/png").unwrap())
            .unwrap();
        assert_eq!(decoded, bytes);
    }

    #[test]
    fn html_escaping() {
        assert_eq!(
            html_escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
