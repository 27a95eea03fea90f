//! Tensors shown like PyTorch prints them (`text/plain`) and as an HTML summary with shape,
//! dtype, device, requires_grad, statistics and a value preview. Large tensors are summarised
//! before anything is copied: only the edge items are read, never millions of numbers.

use crate::display::{MimeBundle, RichDisplay, html_escape};
use tch::{Device, Kind, Tensor};

/// Above this many elements, show only the first and last `EDGE_ITEMS` of each dimension
/// (PyTorch's `threshold` and `edgeitems`).
const THRESHOLD: i64 = 1000;
const EDGE_ITEMS: i64 = 3;

/// A small CPU copy of `t` holding only what will be shown, with, per dimension, whether a gap
/// (`...`) follows position `EDGE_ITEMS - 1`.
struct Preview {
    shape: Vec<i64>,
    values: Vec<f64>,
    gaps: Vec<bool>,
    kind: Kind,
}

fn preview(t: &Tensor) -> Preview {
    let kind = t.kind();
    let mut small = t.detach().to_device(Device::Cpu);
    let summarize = t.numel() > THRESHOLD as usize;
    let mut gaps = Vec::new();
    for dim in 0..small.dim() as i64 {
        let size = small.size()[dim as usize];
        if summarize && size > 2 * EDGE_ITEMS {
            small = Tensor::cat(
                &[
                    small.narrow(dim, 0, EDGE_ITEMS),
                    small.narrow(dim, size - EDGE_ITEMS, EDGE_ITEMS),
                ],
                dim,
            );
            gaps.push(true);
        } else {
            gaps.push(false);
        }
    }
    // Complex numbers would need two columns; show their magnitude rather than fail.
    let small = if is_complex(kind) { small.abs() } else { small };
    let values =
        Vec::<f64>::try_from(small.to_kind(Kind::Double).flatten(0, -1)).unwrap_or_default();
    Preview {
        shape: small.size(),
        values,
        gaps,
        kind,
    }
}

fn is_complex(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::ComplexHalf | Kind::ComplexFloat | Kind::ComplexDouble
    )
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Half
            | Kind::Float
            | Kind::Double
            | Kind::BFloat16
            | Kind::ComplexHalf
            | Kind::ComplexFloat
            | Kind::ComplexDouble
    )
}

/// Formats numbers the way PyTorch does for a whole tensor: integers plainly; floats with
/// four decimals, or in scientific notation when the range is very wide or very small.
fn number_format(p: &Preview) -> impl Fn(f64) -> String {
    let kind = p.kind;
    let finite: Vec<f64> = p.values.iter().copied().filter(|v| v.is_finite()).collect();
    let all_integral = finite.iter().all(|v| v.fract() == 0.0);
    let max = finite.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let min_nonzero = finite
        .iter()
        .filter(|v| **v != 0.0)
        .fold(f64::INFINITY, |m, v| m.min(v.abs()));
    let sci = is_float(kind)
        && (max >= 1e8
            || (min_nonzero.is_finite() && min_nonzero < 1e-4)
            || (min_nonzero.is_finite() && max / min_nonzero > 1e3 && max > 1e3));
    move |v: f64| {
        if kind == Kind::Bool {
            return if v != 0.0 {
                "True".into()
            } else {
                "False".into()
            };
        }
        if v.is_nan() {
            return "nan".into();
        }
        if v.is_infinite() {
            return if v > 0.0 { "inf".into() } else { "-inf".into() };
        }
        if !is_float(kind) {
            return format!("{}", v as i64);
        }
        if sci {
            let s = format!("{v:.4e}");
            // Rust writes 1.2345e-5; PyTorch 1.2345e-05.
            match s.split_once('e') {
                Some((m, e)) => {
                    let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                    format!("{m}e{sign}{digits:0>2}")
                }
                None => s,
            }
        } else if all_integral {
            format!("{v}.")
        } else {
            format!("{v:.4}")
        }
    }
}

fn format_values(p: &Preview) -> String {
    let fmt = number_format(p);
    let cells: Vec<String> = p.values.iter().map(|v| fmt(*v)).collect();
    let width = cells.iter().map(|c| c.len()).max().unwrap_or(0);
    fn rec(
        p: &Preview,
        cells: &[String],
        width: usize,
        dim: usize,
        offset: usize,
        indent: usize,
    ) -> String {
        if p.shape.is_empty() {
            return cells.first().cloned().unwrap_or_default();
        }
        let n = p.shape[dim] as usize;
        let stride: usize = p.shape[dim + 1..].iter().product::<i64>() as usize;
        let last = dim + 1 == p.shape.len();
        let mut parts = Vec::new();
        for i in 0..n {
            if p.gaps[dim] && i == EDGE_ITEMS as usize {
                parts.push("...".to_owned());
            }
            parts.push(if last {
                format!("{:>width$}", cells[offset + i])
            } else {
                rec(p, cells, width, dim + 1, offset + i * stride, indent + 1)
            });
        }
        let sep = if last {
            ", ".to_owned()
        } else {
            format!(
                ",{}{}",
                "\n".repeat(p.shape.len() - dim - 1),
                " ".repeat(indent + 1)
            )
        };
        format!("[{}]", parts.join(&sep))
    }
    rec(p, &cells, width, 0, 0, "tensor(".len())
}

pub(crate) fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Uint8 => "torch.uint8",
        Kind::Int8 => "torch.int8",
        Kind::Int16 => "torch.int16",
        Kind::Int => "torch.int32",
        Kind::Int64 => "torch.int64",
        Kind::Half => "torch.float16",
        Kind::Float => "torch.float32",
        Kind::Double => "torch.float64",
        Kind::BFloat16 => "torch.bfloat16",
        Kind::Bool => "torch.bool",
        Kind::ComplexHalf => "torch.complex32",
        Kind::ComplexFloat => "torch.complex64",
        Kind::ComplexDouble => "torch.complex128",
        _ => "other",
    }
}

pub(crate) fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
    }
}

/// PyTorch's repr: `tensor([[ 0.1000, -2.0000], ...], device='cuda:0', requires_grad=True)`;
/// the dtype is named unless it is float32 or int64 (or bool, which shows as True/False).
pub fn tensor_text(t: &Tensor) -> String {
    if !t.defined() {
        return "tensor(<undefined>)".into();
    }
    let p = preview(t);
    let mut s = format!("tensor({}", format_values(&p));
    if t.numel() == 0 {
        s.push_str(&format!(", size={:?}", t.size()));
    }
    if t.device() != Device::Cpu {
        s.push_str(&format!(", device='{}'", device_name(t.device())));
    }
    if !matches!(p.kind, Kind::Float | Kind::Int64 | Kind::Bool) {
        s.push_str(&format!(", dtype={}", dtype_name(p.kind)));
    }
    if t.requires_grad() {
        s.push_str(", requires_grad=True");
    }
    s.push(')');
    s
}

/// The HTML summary: a header line, min/max/mean for floating tensors, and the values (a table
/// for one and two dimensions, followed by PyTorch's text; only the text otherwise).
pub fn tensor_html(t: &Tensor) -> String {
    if !t.defined() {
        return "<code>tensor(&lt;undefined&gt;)</code>".into();
    }
    let kind = t.kind();
    let mut head = format!(
        "<b>Tensor</b> shape <code>{:?}</code> · dtype <code>{}</code> · device <code>{}</code> · requires_grad <code>{}</code>",
        t.size(),
        dtype_name(kind),
        device_name(t.device()),
        t.requires_grad()
    );
    if is_float(kind) && !is_complex(kind) && t.numel() > 0 {
        let d = t.detach().to_kind(Kind::Double);
        let (min, max, mean) = (
            d.min().double_value(&[]),
            d.max().double_value(&[]),
            d.mean(Kind::Double).double_value(&[]),
        );
        head.push_str(&format!(
            " · min <code>{min:.4}</code> max <code>{max:.4}</code> mean <code>{mean:.4}</code>"
        ));
    }
    let p = preview(t);
    let body = if p.shape.len() == 1 || p.shape.len() == 2 {
        let fmt = number_format(&p);
        let (rows, cols) = if p.shape.len() == 1 {
            (1, p.shape[0] as usize)
        } else {
            (p.shape[0] as usize, p.shape[1] as usize)
        };
        let (row_gap, col_gap) = if p.shape.len() == 1 {
            (false, p.gaps[0])
        } else {
            (p.gaps[0], p.gaps[1])
        };
        let mut html = String::from("<table style=\"font-family:monospace;font-size:0.85em\">");
        for r in 0..rows {
            if row_gap && r == EDGE_ITEMS as usize {
                html.push_str(&format!(
                    "<tr>{}</tr>",
                    "<td>⋮</td>".repeat(cols + usize::from(col_gap))
                ));
            }
            html.push_str("<tr>");
            for c in 0..cols {
                if col_gap && c == EDGE_ITEMS as usize {
                    html.push_str("<td>…</td>");
                }
                html.push_str(&format!(
                    "<td style=\"text-align:right\">{}</td>",
                    fmt(p.values[r * cols + c])
                ));
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
        // PyTorch users look for its text too: it goes under the table.
        html.push_str(&format!(
            "<pre style=\"margin-top:0.3em\">{}</pre>",
            html_escape(&tensor_text(t))
        ));
        html
    } else {
        format!("<pre>{}</pre>", html_escape(&tensor_text(t)))
    };
    format!("<div>{head}{body}</div>")
}

impl RichDisplay for Tensor {
    fn mime_bundle(&self) -> MimeBundle {
        MimeBundle::new()
            .with("text/plain", tensor_text(self))
            .with("text/html", tensor_html(self))
    }
}
