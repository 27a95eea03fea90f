//! The kernel's own `:` commands: what the kernel runs for them, and what an exported program
//! does instead. One place, so a notebook and its batch job agree.

/// The Rust a `:gpu` cell runs (the prelude's report of libtorch, CUDA and devices).
pub const GPU_REPORT_CODE: &str = "println!(\"{}\", gpu_report());";

/// A `:` command line of a cell.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `:help` (or a lone `?`): the kernel's help page.
    Help,
    /// `:gpu`: libtorch, CUDA availability and devices.
    Gpu,
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
        assert_eq!(Command::parse(":vars"), Some(Command::Engine(":vars")));
        assert_eq!(Command::parse("::std::f64::consts::PI"), None);
        assert_eq!(Command::parse("let x = 1;"), None);
    }
}
