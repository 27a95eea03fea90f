//! Operators tch's API had that a later PyTorch removed, kept with the same signature: the C
//! shim calls their replacement. A notebook written for tch 0.26 (PyTorch 2.13) keeps
//! compiling on a PyTorch without them; operators new in a release need nothing here.

use crate::declarations::{Arg, ArgType, Func, Kind, Returns};
use std::collections::BTreeMap;

/// A removed operator as tch 0.26 bound it, and the C++ call that replaces it.
struct Replacement {
    /// The exported name (`atg_<name>`, `Tensor::<name>`).
    name: &'static str,
    /// The declared operator whose name `name` had (`qr_q` is `qr`'s `Q` overload).
    operator: &'static str,
    args: &'static [(&'static str, ArgType)],
    returns: Returns,
    /// The operator the replacement calls: nothing is added if the declarations lack it too.
    needs: &'static str,
    call: &'static str,
}

/// pytorch/pytorch#186817 and #186815 (in 2.14) removed these for their `linalg_` forms.
const REPLACEMENTS: &[Replacement] = &[
    Replacement {
        name: "cholesky",
        operator: "cholesky",
        args: &[("self", ArgType::Tensor), ("upper", ArgType::Bool)],
        returns: Returns::Fixed(1),
        needs: "linalg_cholesky",
        call: "torch::linalg_cholesky(*self, (bool)upper)",
    },
    Replacement {
        name: "cholesky_out",
        operator: "cholesky_out",
        args: &[
            ("out", ArgType::Tensor),
            ("self", ArgType::Tensor),
            ("upper", ArgType::Bool),
        ],
        returns: Returns::Fixed(1),
        needs: "linalg_cholesky_out",
        call: "torch::linalg_cholesky_out(*out, *self, (bool)upper)",
    },
    // `some` was linalg_qr's mode: true is "reduced", false "complete".
    Replacement {
        name: "qr",
        operator: "qr",
        args: &[("self", ArgType::Tensor), ("some", ArgType::Bool)],
        returns: Returns::Fixed(2),
        needs: "linalg_qr",
        call: "torch::linalg_qr(*self, some ? \"reduced\" : \"complete\")",
    },
    Replacement {
        name: "qr_q",
        operator: "qr",
        args: &[
            ("Q", ArgType::Tensor),
            ("R", ArgType::Tensor),
            ("self", ArgType::Tensor),
            ("some", ArgType::Bool),
        ],
        returns: Returns::Fixed(2),
        needs: "linalg_qr_out",
        call: "torch::linalg_qr_out(*Q, *R, *self, some ? \"reduced\" : \"complete\")",
    },
];

/// Adds to `funcs` each replacement whose operator the declarations no longer have; returns
/// their names.
pub fn keep_removed(funcs: &mut BTreeMap<String, Func>) -> Vec<&'static str> {
    let mut added = Vec::new();
    for r in REPLACEMENTS {
        if funcs.contains_key(r.name) || !funcs.contains_key(r.needs) {
            continue;
        }
        funcs.insert(
            r.name.to_owned(),
            Func {
                name: r.operator.to_owned(),
                operator_name: r.operator.to_owned(),
                overload_name: String::new(),
                args: r
                    .args
                    .iter()
                    .map(|(name, arg_type)| Arg {
                        name: (*name).to_owned(),
                        arg_type: *arg_type,
                    })
                    .collect(),
                returns: r.returns,
                kind: Kind::Function,
                c_call: Some(r.call.to_owned()),
            },
        );
        added.push(r.name);
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn funcs(names: &[&str]) -> BTreeMap<String, Func> {
        names
            .iter()
            .map(|n| {
                let func = Func {
                    name: (*n).into(),
                    operator_name: (*n).into(),
                    overload_name: String::new(),
                    args: Vec::new(),
                    returns: Returns::Fixed(1),
                    kind: Kind::Function,
                    c_call: None,
                };
                ((*n).to_owned(), func)
            })
            .collect()
    }

    #[test]
    fn only_what_is_gone_and_has_its_replacement() {
        // 2.13: cholesky is still declared; nothing added.
        let mut old = funcs(&["cholesky", "linalg_cholesky"]);
        assert!(keep_removed(&mut old).is_empty());
        assert_eq!(old["cholesky"].c_call, None);
        // 2.14: gone, its replacement there. qr without linalg_qr_out: qr_q is not invented.
        let mut new = funcs(&["linalg_cholesky", "linalg_qr"]);
        assert_eq!(keep_removed(&mut new), ["cholesky", "qr"]);
        let qr = &new["qr"];
        assert_eq!((qr.returns, qr.args.len()), (Returns::Fixed(2), 2));
        assert!(
            qr.c_call
                .as_deref()
                .unwrap()
                .starts_with("torch::linalg_qr(*self, some ?")
        );
    }
}
