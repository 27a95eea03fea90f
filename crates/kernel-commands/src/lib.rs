//! The kernel's own `:` commands, named once: how a cell's line parses ([`Command`]), what
//! `:help` says of each ([`COMMANDS`], which the README's table is checked against), and the
//! Rust the kernel runs for them, which an exported program runs instead. One place, so a
//! notebook, its help and its batch job agree.

/// One line of `:help`'s "Kernel commands".
#[derive(Debug, Clone, Copy)]
pub struct CommandHelp {
    /// How it is written, e.g. `:timing [on|off]`.
    pub usage: &'static str,
    /// What it does (lines after the first are indented under it).
    pub summary: &'static str,
}

impl CommandHelp {
    /// The command's name, e.g. `:timing`.
    pub fn name(&self) -> &'static str {
        self.usage.split_whitespace().next().unwrap_or(self.usage)
    }
}

/// Every `:` command the kernel itself knows (others go to the evaluation engine, whose own
/// `:help` follows).
pub const COMMANDS: &[CommandHelp] = &[
    CommandHelp {
        usage: ":help",
        summary: "this text",
    },
    CommandHelp {
        usage: ":gpu",
        summary: "libtorch version, CUDA availability and devices",
    },
    CommandHelp {
        usage: ":vars",
        summary: "variables: name, type and a short value",
    },
    CommandHelp {
        usage: ":restore",
        summary: "the variables saved before the evaluation process was restarted or the\n\
                  kernel started (tensors, VarStores, plain data); after a crash it is automatic",
    },
    CommandHelp {
        usage: ":snapshot",
        summary: "where this notebook's snapshots are and what they hold",
    },
    CommandHelp {
        usage: ":timing [on|off]",
        summary: "compile and run time of each cell (a bare :timing turns it on)",
    },
    CommandHelp {
        usage: ":dep NAME = \"VERSION\"",
        summary: "add a crate (needs a registry or a vendored source)",
    },
    CommandHelp {
        usage: ":opt LEVEL",
        summary: "rustc opt-level for later cells (0, 1, 2, 3, s, z)",
    },
];

/// `:help`'s "Kernel commands" section, from [`COMMANDS`].
pub fn help_section() -> String {
    const COLUMN: usize = 15;
    let mut text = String::from("Kernel commands\n");
    for command in COMMANDS {
        let mut lines = command.summary.lines();
        let first = lines.next().unwrap_or_default();
        if command.usage.len() < COLUMN {
            text.push_str(&format!("  {:<COLUMN$}{first}\n", command.usage));
        } else {
            text.push_str(&format!("  {}  {first}\n", command.usage));
        }
        for line in lines {
            text.push_str(&format!("  {:COLUMN$}{}\n", "", line.trim()));
        }
    }
    text
}

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
    /// Anything else (`:opt 2`, `:clear`, ...), left to the evaluation engine.
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
    use super::{COMMANDS, Command, help_section};

    #[test]
    fn every_listed_command_parses_to_itself_and_has_help() {
        for help in COMMANDS {
            let parsed = Command::parse(help.name()).expect("a command");
            // `:opt` is the engine's, listed for its importance; the rest are the kernel's own.
            assert_eq!(
                matches!(parsed, Command::Engine(_)),
                help.name() == ":opt",
                "{}",
                help.name()
            );
            assert!(help_section().contains(help.usage));
        }
        assert!(help_section().contains("                 kernel started"));
    }

    /// The README's table of commands names every one of them (it is the users' reference).
    #[test]
    fn the_readme_lists_every_command() {
        let readme = include_str!("../../../README.md");
        for help in COMMANDS {
            assert!(
                readme.contains(&format!("| `{}", help.name())),
                "README.md's table of commands lacks {}",
                help.name()
            );
        }
    }

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
