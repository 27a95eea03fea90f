/// Escapes a field: `%`, `:`, newlines and the field separator, so it never breaks a line or a
/// record apart.
pub fn escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace(':', "%3A")
        .replace('\n', "%0A")
        .replace('\r', "%0D")
        .replace('\u{1f}', "%1F")
}

/// The inverse of `escape`.
pub fn unescape(s: &str) -> String {
    s.replace("%0D", "\r")
        .replace("%0A", "\n")
        .replace("%3A", ":")
        .replace("%1F", "\u{1f}")
        .replace("%25", "%")
}

/// A rich-output record for `kind` (`display`, `update`, `clear`, `clear-wait`) and display id
/// `id` (empty for none), without its line end.
pub fn output_record(kind: &str, id: &str, data: &[(&str, &str)]) -> String {
    let mut line = format!("{OUTPUT_MARKER}{}{FIELD_SEP}{}", escape(kind), escape(id));
    for (mime, content) in data {
        line.push(FIELD_SEP);
        line.push_str(&escape(mime));
        line.push(FIELD_SEP);
        line.push_str(&escape(content));
    }
    line
}
