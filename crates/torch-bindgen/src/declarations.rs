//! Reading torchgen's `Declarations.yaml` into the operators tch binds, with tch's filters
//! (gen.ml's `read_yaml`): what is left out, and how each argument is typed.

use crate::filters;
use thiserror::Error;
use yaml_rust2::{Yaml, YamlLoader};

#[derive(Debug, Error)]
pub enum DeclarationsError {
    #[error("not YAML: {0}")]
    Yaml(#[from] yaml_rust2::ScanError),
    #[error("the document is not a list of operators")]
    NotAList,
    #[error("operator #{index}: {what}")]
    Entry { index: usize, what: String },
}

/// The argument types tch has a C and a Rust form for (gen.ml's `arg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    Bool,
    Int64,
    Int64Option,
    Double,
    DoubleOption,
    Tensor,
    TensorOption,
    IntList,
    IntListOption,
    DoubleList,
    TensorOptList,
    TensorList,
    /// Kind and device.
    TensorOptions,
    Scalar,
    ScalarType,
    ScalarTypeOption,
    Device,
    String,
    Layout,
    LayoutOption,
}

impl ArgType {
    /// The type of a declaration's `dynamic_type`, or `None` for one tch does not bind.
    fn of_dynamic_type(dynamic_type: &str, is_nullable: bool) -> Option<ArgType> {
        use ArgType::*;
        let pick = |nullable, plain| if is_nullable { nullable } else { plain };
        Some(match dynamic_type.to_lowercase().as_str() {
            "bool" => Bool,
            "int64_t" => pick(Int64Option, Int64),
            "double" => pick(DoubleOption, Double),
            "at::tensor" => pick(TensorOption, Tensor),
            "at::tensoroptions" => TensorOptions,
            "at::intarrayref" => pick(IntListOption, IntList),
            "at::arrayref<double>" => DoubleList,
            "const c10::list<::std::optional<at::tensor>> &"
            | "const c10::list<c10::optional<at::tensor>> &" => TensorOptList,
            "const at::itensorlistref &" | "at::tensorlist" => TensorList,
            "at::device" => Device,
            "const at::scalar &" | "at::scalar" => Scalar,
            "at::scalartype" => pick(ScalarTypeOption, ScalarType),
            "c10::string_view" => String,
            "at::layout" => pick(LayoutOption, Layout),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: String,
    pub arg_type: ArgType,
}

/// What an operator returns, as tch's bindings hand it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    Nothing,
    /// This many tensors (a tuple when more than one).
    Fixed(usize),
    /// A vector of tensors.
    Dynamic,
    Bool,
    Int64,
    Double,
}

/// `torch::name(...)` or `self->name(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Function,
    Method,
}

/// One operator overload tch binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Func {
    pub name: String,
    pub operator_name: String,
    pub overload_name: String,
    pub args: Vec<Arg>,
    pub returns: Returns,
    pub kind: Kind,
    /// The C++ call of the shim when it is not the operator itself (`compat`).
    pub c_call: Option<String>,
}

fn field<'a>(map: &'a Yaml, key: &str) -> Option<&'a Yaml> {
    match &map[key] {
        Yaml::BadValue => None,
        value => Some(value),
    }
}

/// A scalar as text, as gen.ml's `extract_string` reads it: its YAML 1.1 reader takes a plain
/// `N` (an argument of a few operators) for `false`, made `n` again, so tch's C shim has `n`.
/// PyYAML, which writes the file, quotes its own booleans but not `y`/`n`.
fn text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) if matches!(s.as_str(), "y" | "Y") => Some("y".to_owned()),
        Yaml::String(s) if matches!(s.as_str(), "n" | "N") => Some("n".to_owned()),
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(if *b { "y" } else { "n" }.to_owned()),
        _ => None,
    }
}

fn boolean(value: &Yaml) -> Option<bool> {
    match value {
        Yaml::Boolean(b) => Some(*b),
        Yaml::String(s) if s == "true" => Some(true),
        Yaml::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// Parses `Declarations.yaml` and keeps what tch binds, in the file's order.
pub fn read(yaml: &str) -> Result<Vec<Func>, DeclarationsError> {
    let docs = YamlLoader::load_from_str(yaml)?;
    let entries = match docs.first() {
        Some(Yaml::Array(entries)) => entries,
        _ => return Err(DeclarationsError::NotAList),
    };
    let mut funcs = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let err = |what: String| DeclarationsError::Entry { index, what };
        let string = |key: &str| {
            field(entry, key)
                .and_then(text)
                .ok_or_else(|| err(format!("no `{key}`")))
        };
        let name = string("name")?;
        let operator_name = string("operator_name")?;
        let overload_name = string("overload_name")?;
        let deprecated = field(entry, "deprecated")
            .and_then(boolean)
            .ok_or_else(|| err(format!("{name}: no `deprecated`")))?;
        if deprecated || filters::excluded(&name) {
            continue;
        }
        let list = |key: &str| match field(entry, key) {
            Some(Yaml::Array(items)) => Ok(items.as_slice()),
            _ => Err(err(format!("{name}: no list `{key}`"))),
        };
        let (Some(returns), Some(kind)) =
            (returns_of(list("returns")?), kind_of(list("method_of")?))
        else {
            continue;
        };
        let with_scalar_defaults = filters::WITH_OPTIONAL_SCALAR_ARGS.contains(&name.as_str());
        let mut args = Vec::new();
        let mut simple = true;
        for arg in list("arguments")? {
            let arg_name = field(arg, "name")
                .and_then(text)
                .ok_or_else(|| err(format!("{name}: an argument without a name")))?;
            let dynamic_type = dynamic_type(arg)
                .ok_or_else(|| err(format!("{name}: `{arg_name}` has no dynamic_type")))?;
            let is_nullable = field(arg, "is_nullable").and_then(boolean).unwrap_or(false);
            let has_default = field(arg, "default").is_some();
            match ArgType::of_dynamic_type(&dynamic_type, is_nullable) {
                // Scalars with a default stay out of the Rust API unless asked for.
                Some(ArgType::Scalar) if has_default && !is_nullable => {
                    if with_scalar_defaults {
                        args.push(Arg {
                            name: arg_name,
                            arg_type: ArgType::Scalar,
                        });
                    }
                }
                Some(ArgType::TensorOptions)
                    if has_default && filters::NO_TENSOR_OPTIONS.contains(&name.as_str()) => {}
                Some(arg_type) => {
                    let name = if arg_name == "self" && arg_type == ArgType::Scalar {
                        "self_scalar".to_owned()
                    } else {
                        arg_name
                    };
                    args.push(Arg { name, arg_type });
                }
                // An argument tch cannot pass: left out if it has a default, else the
                // operator is.
                None if has_default => {}
                None => {
                    simple = false;
                    break;
                }
            }
        }
        if simple {
            funcs.push(Func {
                name,
                operator_name,
                overload_name,
                args,
                returns,
                kind,
                c_call: None,
            });
        }
    }
    Ok(funcs)
}

fn dynamic_type(value: &Yaml) -> Option<String> {
    field(value, "dynamic_type").and_then(text)
}

fn returns_of(returns: &[Yaml]) -> Option<Returns> {
    if returns.is_empty() {
        return Some(Returns::Nothing);
    }
    if returns
        .iter()
        .all(|r| dynamic_type(r).as_deref() == Some("at::Tensor"))
    {
        return Some(Returns::Fixed(returns.len()));
    }
    match returns {
        [only] => match dynamic_type(only)?.as_str() {
            "bool" => Some(Returns::Bool),
            "int64_t" => Some(Returns::Int64),
            "double" => Some(Returns::Double),
            "at::TensorList" => Some(Returns::Dynamic),
            _ => None,
        },
        _ => None,
    }
}

fn kind_of(method_of: &[Yaml]) -> Option<Kind> {
    let has = |what: &str| method_of.iter().any(|m| text(m).as_deref() == Some(what));
    if has("namespace") {
        Some(Kind::Function)
    } else if has("Tensor") {
        Some(Kind::Method)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: &str = "
- name: add
  operator_name: add
  overload_name: Tensor
  deprecated: false
  method_of: [Type, Tensor, namespace]
  arguments:
  - {dynamic_type: at::Tensor, is_nullable: false, name: self}
  - {dynamic_type: at::Tensor, is_nullable: false, name: other}
  - {default: 1, dynamic_type: const at::Scalar &, is_nullable: false, name: alpha}
  returns:
  - {dynamic_type: at::Tensor, name: result}
- name: unknown_arg
  operator_name: unknown_arg
  overload_name: ''
  deprecated: false
  method_of: [namespace]
  arguments:
  - {dynamic_type: at::Generator, is_nullable: true, name: generator}
  returns: []
- name: defaulted_unknown
  operator_name: defaulted_unknown
  overload_name: ''
  deprecated: false
  method_of: [Tensor]
  arguments:
  - {dynamic_type: at::Tensor, is_nullable: false, name: self}
  - {default: None, dynamic_type: at::Generator, is_nullable: true, name: generator}
  - {dynamic_type: int64_t, is_nullable: true, name: dim}
  returns:
  - {dynamic_type: bool, name: result}
- name: _foreach_add
  operator_name: _foreach_add
  overload_name: ''
  deprecated: false
  method_of: [namespace]
  arguments: []
  returns: []
";

    #[test]
    fn keeps_what_tch_binds_and_drops_the_rest() {
        let funcs = read(ENTRY).unwrap();
        let names: Vec<_> = funcs.iter().map(|f| f.name.as_str()).collect();
        // unknown_arg: a Generator without a default; _foreach_add: an excluded prefix.
        assert_eq!(names, ["add", "defaulted_unknown"]);
        let add = &funcs[0];
        // alpha: a scalar with a default, not in the Rust API.
        assert_eq!(add.args.len(), 2);
        assert_eq!(add.returns, Returns::Fixed(1));
        assert_eq!(add.kind, Kind::Function);
        let d = &funcs[1];
        assert_eq!(d.kind, Kind::Method);
        assert_eq!(d.returns, Returns::Bool);
        assert_eq!(
            d.args,
            [
                Arg {
                    name: "self".into(),
                    arg_type: ArgType::Tensor
                },
                Arg {
                    name: "dim".into(),
                    arg_type: ArgType::Int64Option
                },
            ]
        );
    }

    #[test]
    fn bad_input_says_which_entry() {
        assert!(matches!(read("a: 1"), Err(DeclarationsError::NotAList)));
        let e = read("- name: x\n  operator_name: x\n").unwrap_err();
        assert!(
            e.to_string().contains("operator #0: no `overload_name`"),
            "{e}"
        );
    }
}
