//! The exported name of each overload (`atg_<name>`, `Tensor::<name>`), as gen.ml gives them:
//! the first overload by name length then argument count keeps the operator's name, the others
//! get their overload name as a suffix.

use crate::declarations::{Arg, ArgType, Func, Kind, Returns};
use std::collections::BTreeMap;

/// Methods tch's hand-written code calls that the declarations do not list.
fn hand_listed_methods() -> Vec<Func> {
    let method = |name: &str, args: &[(&str, ArgType)]| Func {
        name: name.to_owned(),
        operator_name: name.to_owned(),
        overload_name: String::new(),
        args: args
            .iter()
            .map(|(name, arg_type)| Arg {
                name: (*name).to_owned(),
                arg_type: *arg_type,
            })
            .collect(),
        returns: Returns::Fixed(1),
        kind: Kind::Method,
        c_call: None,
    };
    vec![
        method("grad", &[("self", ArgType::Tensor)]),
        method(
            "set_requires_grad",
            &[("self", ArgType::Tensor), ("r", ArgType::Bool)],
        ),
        method(
            "toType",
            &[
                ("self", ArgType::Tensor),
                ("scalar_type", ArgType::ScalarType),
            ],
        ),
        method(
            "to",
            &[("self", ArgType::Tensor), ("device", ArgType::Device)],
        ),
    ]
}

/// gen.ml's `operator_name`: scatter_reduce is both an operator and an overload of scatter.
fn operator_name(func: &Func) -> String {
    match func.operator_name.to_lowercase().as_str() {
        "scatter_reduce" => "_scatter_reduce".to_owned(),
        "scatter_reduce_" => "_scatter_reduce_".to_owned(),
        other => other.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("two overloads are both named `{0}`")]
pub struct NameClash(pub String);

/// Every function to bind (the hand-listed methods, then `funcs`) by its exported name, in
/// the byte order of the names (the order of the generated files).
pub fn name_overloads(funcs: Vec<Func>) -> Result<BTreeMap<String, Func>, NameClash> {
    let mut by_operator: BTreeMap<String, Vec<Func>> = BTreeMap::new();
    for func in hand_listed_methods().into_iter().chain(funcs) {
        by_operator
            .entry(operator_name(&func))
            .or_default()
            .push(func);
    }
    let mut named = BTreeMap::new();
    for (operator, mut funcs) in by_operator {
        let names: Vec<(String, Func)> = if funcs.len() == 1 {
            vec![(operator, funcs.remove(0))]
        } else {
            let has_empty_overload = funcs.iter().any(|f| f.overload_name.is_empty());
            // Stable, as OCaml's List.sort: equal keys keep the declarations' order.
            funcs.sort_by_key(|f| (f.name.len(), f.args.len()));
            funcs
                .into_iter()
                .enumerate()
                .map(|(index, func)| {
                    let overload = func.overload_name.to_lowercase();
                    let name = if overload.is_empty() || (index == 0 && !has_empty_overload) {
                        operator.clone()
                    } else if operator.ends_with('_') {
                        format!("{operator}{overload}_")
                    } else {
                        format!("{operator}_{overload}")
                    };
                    (name, func)
                })
                .collect()
        };
        for (name, func) in names {
            if named.contains_key(&name) {
                return Err(NameClash(name));
            }
            named.insert(name, func);
        }
    }
    Ok(named)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn func(name: &str, overload: &str, nargs: usize) -> Func {
        Func {
            name: name.into(),
            operator_name: name.trim_end_matches("_out").into(),
            overload_name: overload.into(),
            args: (0..nargs)
                .map(|i| Arg {
                    name: format!("a{i}"),
                    arg_type: ArgType::Int64,
                })
                .collect(),
            returns: Returns::Fixed(1),
            kind: Kind::Function,
            c_call: None,
        }
    }

    #[test]
    fn the_shortest_overload_keeps_the_name_unless_one_has_no_overload_name() {
        let named = name_overloads(vec![
            func("sum", "dim_IntList", 3),
            func("sum", "", 1),
            func("min", "dim", 2),
            func("min", "other", 1),
        ])
        .unwrap();
        let names: Vec<_> = named.keys().map(String::as_str).collect();
        // min: no overload without a name, so the first by argument count keeps it.
        assert_eq!(
            names,
            [
                "grad",
                "min",
                "min_dim",
                "set_requires_grad",
                "sum",
                "sum_dim_intlist",
                "to",
                "totype"
            ]
        );
        assert_eq!(named["min"].overload_name, "other");
    }

    #[test]
    fn a_clash_is_an_error() {
        let e = name_overloads(vec![
            func("a", "b", 1),
            func("a", "", 1),
            func("a_b", "", 1),
        ])
        .unwrap_err();
        assert_eq!(e.0, "a_b");
    }
}
