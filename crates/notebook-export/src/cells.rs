//! Cells to one program: items at the top, statements in `main`.

use crate::Cell;
use kernel_commands::{Command, GPU_REPORT_CODE};
use ra_ap_syntax::ast::{self, HasModuleItem};
use ra_ap_syntax::{AstNode, Edition, SourceFile, TextRange};

/// A notebook as Rust source parts.
#[derive(Debug, Default, PartialEq)]
pub struct Program {
    /// Items, in cell order, each block headed by `// cell N`.
    pub items: String,
    /// The body of `main`.
    pub body: String,
    /// `name = spec` lines for `[dependencies]`, from `:dep`.
    pub dependencies: Vec<String>,
    /// What was left out, for the summary.
    pub notes: Vec<String>,
}

const CELL_FN_HEAD: &str = "fn __cell() {\n";

/// Cell tags whose cells the program leaves out: `raises-exception` (nbconvert's tag for a
/// cell meant to fail) and `notebook-only` (cells for the notebook alone, such as the one that
/// submits this notebook as a job: inside the job it would submit itself again).
pub const LEFT_OUT_TAGS: [&str; 2] = ["raises-exception", "notebook-only"];

pub fn convert_cells(cells: &[Cell], edition: Edition) -> Program {
    let mut program = Program::default();
    for (index, cell) in cells.iter().filter(|c| c.cell_type == "code").enumerate() {
        let number = index + 1;
        if let Some(tag) = LEFT_OUT_TAGS
            .iter()
            .find(|tag| cell.metadata.tags.iter().any(|t| t == *tag))
        {
            program
                .notes
                .push(format!("cell {number} is tagged {tag}: left out"));
            continue;
        }
        let mut code = String::new();
        let mut commands = Vec::new();
        for line in cell.source.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with(':') && Command::parse(trimmed).is_some() {
                commands.push(trimmed.to_owned());
                // Keep line numbers aligned with the notebook.
                code.push('\n');
            } else {
                code.push_str(line);
                code.push('\n');
            }
        }
        let mut body = String::new();
        for command in commands {
            match Command::parse(&command) {
                Some(Command::Dep { name, spec }) => {
                    if !name.is_empty() {
                        program.dependencies.push(format!("{name} = {spec}"));
                    }
                }
                Some(Command::Gpu) => {
                    body.push_str(GPU_REPORT_CODE);
                    body.push('\n');
                }
                _ => {
                    body.push_str(&format!("// notebook command left out: {command}\n"));
                    program.notes.push(format!(
                        "cell {number}: `{command}` has no batch equivalent: left out"
                    ));
                }
            }
        }
        let (items, statements) = split_cell(&code, edition);
        if !items.trim().is_empty() {
            program
                .items
                .push_str(&format!("// cell {number}\n{}\n", items.trim_end()));
        }
        body.push_str(&statements);
        if !body.trim().is_empty() {
            // Names the files this cell's plots, images and tables are saved to.
            program.body.push_str(&format!(
                "    // cell {number}\n    tch_prelude::batch::cell({number});\n{}\n",
                indent(body.trim_end())
            ));
        }
    }
    program
}

/// (items, statements) of one cell's code. The final expression, if any, becomes a statement
/// that shows it as the kernel would (its rich text form, or Debug).
fn split_cell(code: &str, edition: Edition) -> (String, String) {
    let wrapped = format!("{CELL_FN_HEAD}{code}\n}}");
    let file = SourceFile::parse(&wrapped, edition).tree();
    let Some(ast::Item::Fn(function)) = file.items().next() else {
        return (String::new(), code.to_owned());
    };
    let Some(list) = function.body().and_then(|b| b.stmt_list()) else {
        return (String::new(), code.to_owned());
    };
    let offset = CELL_FN_HEAD.len();
    let local = |r: TextRange| {
        (
            usize::from(r.start()) - offset,
            usize::from(r.end()) - offset,
        )
    };
    let mut items = String::new();
    // (start, end, replacement) edits of `code`, for what leaves `main`.
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    for statement in list.statements() {
        if let ast::Stmt::Item(item) = statement {
            let (start, end) = local(item.syntax().text_range());
            if end <= code.len() {
                items.push_str(&code[start..end]);
                items.push('\n');
                edits.push((start, end, String::new()));
            }
        }
    }
    // A cell may end in `let x = ..` without `;`, as the kernel accepts.
    if let Some(ast::Stmt::LetStmt(last)) = list.statements().last()
        && last.semicolon_token().is_none()
    {
        let (_, end) = local(last.syntax().text_range());
        if end <= code.len() {
            edits.push((end, end, ";".to_owned()));
        }
    }
    if let Some(tail) = list.tail_expr() {
        let (start, end) = local(tail.syntax().text_range());
        if end <= code.len() {
            let shown = format!("{{ (&({})).evcxr_display(); }}", &code[start..end]);
            edits.push((start, end, shown));
        }
    }
    let mut statements = code.to_owned();
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (start, end, text) in edits {
        statements.replace_range(start..end, &text);
    }
    // Drop blank lines left where items were.
    let statements: Vec<&str> = statements.lines().collect();
    let statements = statements.join("\n").trim_matches('\n').to_owned();
    (
        items,
        if statements.trim().is_empty() {
            String::new()
        } else {
            statements + "\n"
        },
    )
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CellMetadata;

    fn code(source: &str) -> Cell {
        Cell {
            cell_type: "code".into(),
            source: source.into(),
            metadata: CellMetadata::default(),
        }
    }

    #[test]
    fn items_go_up_statements_stay_and_the_last_value_is_shown() {
        let cells = vec![
            code(
                "use std::collections::HashMap;\n/// Doubles.\nfn double(x: i32) -> i32 { x * 2 }\nlet a = double(21);\na",
            ),
            Cell {
                cell_type: "markdown".into(),
                source: "# text".into(),
                metadata: CellMetadata::default(),
            },
            code(
                ":dep rand = \"0.8\"\n:vars\nlet m: HashMap<i32, i32> = HashMap::new();\n// a comment stays\nprintln!(\"{}\", m.len());",
            ),
        ];
        let p = convert_cells(&cells, Edition::Edition2021);
        assert!(p.items.contains("// cell 1\nuse std::collections::HashMap;\n/// Doubles.\nfn double(x: i32) -> i32 { x * 2 }"), "{}", p.items);
        assert!(p.body.contains("let a = double(21);"), "{}", p.body);
        assert!(p.body.contains("{ (&(a)).evcxr_display(); }"), "{}", p.body);
        assert!(!p.body.contains("fn double"));
        assert!(p.body.contains("// a comment stays"));
        assert!(p.body.contains("// notebook command left out: :vars"));
        assert_eq!(p.dependencies, vec!["rand = \"0.8\""]);
        assert_eq!(p.notes.len(), 1);
    }

    #[test]
    fn failing_cells_are_left_out_and_gpu_is_printed() {
        let mut failing = code("panic!()");
        failing.metadata.tags.push("raises-exception".into());
        let p = convert_cells(&[failing, code(":gpu")], Edition::Edition2021);
        assert!(!p.body.contains("panic!"));
        assert!(p.body.contains("gpu_report()"));
        assert!(p.notes[0].contains("raises-exception"));
    }

    #[test]
    fn notebook_only_cells_are_left_out() {
        let mut submitting = code("let job = submit(Submit::this_notebook());");
        submitting.metadata.tags.push("notebook-only".into());
        let p = convert_cells(&[code("let a = 1;"), submitting], Edition::Edition2021);
        assert!(
            p.body.contains("let a = 1;") && !p.body.contains("submit"),
            "{}",
            p.body
        );
        assert_eq!(p.notes, ["cell 2 is tagged notebook-only: left out"]);
    }

    #[test]
    fn a_last_let_without_semicolon_gets_one() {
        let p = convert_cells(
            &[code("let a = 1;\nlet t = a + 2"), code("t")],
            Edition::Edition2021,
        );
        assert!(p.body.contains("let t = a + 2;"), "{}", p.body);
    }

    #[test]
    fn a_statement_ending_in_a_semicolon_is_not_shown() {
        let p = convert_cells(&[code("let x = 1;\nx + 1;")], Edition::Edition2021);
        assert!(!p.body.contains("evcxr_display"));
    }
}
