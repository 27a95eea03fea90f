"""ARCHITECTURE.md stays true: every path it cites exists, and every Rust item it names is
defined in the workspace's sources (a renamed function or a moved file fails here)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "ARCHITECTURE.md"
KINDS = r"(?:fn|struct|enum|trait|const|static|type|mod|macro_rules!)"


def cited(text):
    """The backticked spans outside fenced code blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


def rust_sources():
    for base in ("kernel", "crates"):
        for path in (ROOT / base).rglob("*.rs"):
            if "target" not in path.parts:
                yield path.read_text(errors="replace")


def defined_names():
    names = set()
    for source in rust_sources():
        names.update(re.findall(rf"\b{KINDS}\s+([A-Za-z_][A-Za-z0-9_]*)", source))
        # Enum variants and associated items are written `Name {`, `Name(`, `Name,` inside
        # an enum; trait methods `fn name`: covered by `fn` above.
        for body in re.findall(r"\benum\s+\w+[^{]*\{(.*?)\n\}", source, flags=re.S):
            names.update(re.findall(r"^\s*([A-Z][A-Za-z0-9_]*)\b", body, flags=re.M))
    return names


def is_path(span):
    return "/" in span or re.search(r"\.(rs|md|py|sh|toml|tsv|json|lock)$", span)


def is_rust_item(span):
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*(\(\))?", span)


def test_the_architecture_note_cites_only_what_exists():
    text = DOC.read_text()
    spans = cited(text)
    # Repository paths; runtime ones (`~/.cache/...`, `instances/<host>-<pid>/`) are not checked.
    paths = [
        s for s in spans
        if is_path(s) and not s.startswith(("http", "$", "~", "/")) and not re.search(r"[<>*{} ]", s)
    ]
    missing = [p for p in paths if not (ROOT / p.split(":")[0].rstrip("/")).exists()]
    assert not missing, f"ARCHITECTURE.md cites paths that do not exist: {missing}"

    names = defined_names()
    sources = "\n".join(rust_sources())
    crates = {d.name.replace("-", "_") for d in (ROOT / "crates").iterdir()} | {"tch_kernel"}

    def exists(span):
        last = span.removesuffix("()").split("::")[-1]
        if last in names or last in crates:
            return True
        # A constant's value cited by name (an environment variable, a marker).
        return bool(re.fullmatch(r"[A-Z][A-Z0-9_]+", last)) and f'"{last}"' in sources

    items = [s for s in spans if not is_path(s) and is_rust_item(s)]
    unknown = sorted({s for s in items if not exists(s)})
    assert not unknown, f"ARCHITECTURE.md names Rust items that are not defined: {unknown}"
    assert len(paths) > 20 and len(items) > 30, "the note cites the code it describes"
