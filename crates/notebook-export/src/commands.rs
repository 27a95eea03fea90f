//! The kernel's own `:` commands: what the kernel runs for them, and what an exported program
//! does instead. One place, so a notebook and its batch job agree.

/// The Rust a `:gpu` cell runs (the prelude's report of libtorch, CUDA and devices).
pub const GPU_REPORT_CODE: &str = "println!(\"{}\", gpu_report());";

/// The Rust a `:vars` cell runs in a kernel with the prelude: a table of every variable's name,
/// type and short value (see notebook-helpers' `kernel_vars`). `vars` are (name, type).
pub fn vars_table_code(vars: &[(String, String)]) -> String {
    let rows: String = vars
        .iter()
        .map(|(name, ty)| format!("({name:?}, {ty:?}, (&&&&Short(&{name})).short()),\n"))
        .collect();
    format!(
        "{{\nuse ::tch_prelude::kernel_vars::{{Short, ViaDebug as _, ViaKnown as _, ViaNothing as _, ViaRich as _}};\n::tch_prelude::kernel_vars::table(vec![\n{rows}])\n}}"
    )
}

/// A `:` command line of a cell.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `:help` (or a lone `?`): the kernel's help page.
    Help,
    /// `:gpu`: libtorch, CUDA availability and devices.
    Gpu,
    /// `:vars`: variables with their types and short values.
    Vars,
    /// `:restore`: the variables of the last snapshot an earlier evaluation process left.
    Restore,
    /// `:snapshot`: where this notebook's snapshots are and what they hold.
    Snapshot,
    /// `:timing` (`on`, `off`, or nothing): the compile and run time of every cell so far, and
    /// of each later cell under it.
    Timing(&'a str),
    /// `:dep NAME = SPEC` (a bare `:dep NAME` means any version): a crate for later cells.
    Dep { name: &'a str, spec: &'a str },
    /// Anything else (`:vars`, `:opt 2`, ...), left to the evaluation engine.
    Engine(&'a str),
}

impl<'a> Command<'a> {
    /// The command on `line`, or None when the line is Rust code.
    pub fn parse(line: &'a str) -> Option<Command<'a>> {
        let line = line.trim();
        if line == "?" {
            return Some(Command::Help);
        }
        let rest = line.strip_prefix(':')?;
        if !rest.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return None;
        }
        let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        Some(match name {
            "help" => Command::Help,
            "gpu" => Command::Gpu,
            "vars" => Command::Vars,
            "restore" => Command::Restore,
            "snapshot" => Command::Snapshot,
            "timing" => Command::Timing(args.trim()),
            "dep" => match args.split_once('=') {
                Some((krate, spec)) => Command::Dep {
                    name: krate.trim(),
                    spec: spec.trim(),
                },
                None => Command::Dep {
                    name: args.trim(),
                    spec: "\"*\"",
                },
            },
            _ => Command::Engine(line),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse(" :help "), Some(Command::Help));
        assert_eq!(Command::parse("?"), Some(Command::Help));
        assert_eq!(Command::parse(":gpu"), Some(Command::Gpu));
        assert_eq!(
            Command::parse(":dep rand = \"0.8\""),
            Some(Command::Dep {
                name: "rand",
                spec: "\"0.8\""
            })
        );
        assert_eq!(
            Command::parse(":dep rand"),
            Some(Command::Dep {
                name: "rand",
                spec: "\"*\""
            })
        );
        assert_eq!(Command::parse(":vars"), Some(Command::Vars));
        assert_eq!(Command::parse(":restore"), Some(Command::Restore));
        assert_eq!(Command::parse(":snapshot"), Some(Command::Snapshot));
        assert_eq!(Command::parse(":timing off"), Some(Command::Timing("off")));
        assert_eq!(Command::parse(":opt 2"), Some(Command::Engine(":opt 2")));
        assert_eq!(Command::parse("::std::f64::consts::PI"), None);
        assert_eq!(Command::parse("let x = 1;"), None);
    }
}
