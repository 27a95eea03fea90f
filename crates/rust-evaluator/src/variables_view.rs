//! The session's variables as a debugger's Variables panel shows them: name, type, short value,
//! and for some types a rich preview (a tensor's HTML) or children (a VarStore's parameters).
//! The evaluator publishes them after each cell, from the types the engine knows and the
//! descriptions the evaluation process wrote (child-protocol's `VARIABLES_MARKER`), into a
//! shared list that a debugger reads from another thread while cells run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One variable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VariableView {
    pub name: String,
    /// As people read it (`Tensor`, `Vec<f32>`).
    pub type_name: String,
    /// Short value (`[2, 3] torch.float32 on cpu`), empty when not described.
    pub value: String,
    /// A rich preview (HTML), for tensors.
    pub html: Option<String>,
    /// Named parts (a VarStore's parameters and their shapes).
    pub children: Vec<(String, String)>,
}

/// The variables after the last cell, shared between the evaluator and a debugger.
#[derive(Debug, Clone, Default)]
pub struct SharedVariables(Arc<Mutex<Vec<VariableView>>>);

impl SharedVariables {
    pub fn get(&self) -> Vec<VariableView> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set(&self, views: Vec<VariableView>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = views;
    }
}

/// The views of `types` (name, type as read), with what `described` says of each.
pub(crate) fn views(
    types: Vec<(String, String)>,
    described: &BTreeMap<String, serde_json::Value>,
) -> Vec<VariableView> {
    let mut out: Vec<VariableView> = types
        .into_iter()
        .map(|(name, type_name)| {
            let d = described.get(&name);
            let text = |key: &str| d.and_then(|d| d.get(key)).and_then(|v| v.as_str());
            let children = d
                .and_then(|d| d.get("children"))
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default();
            VariableView {
                value: text("value").unwrap_or_default().to_owned(),
                html: text("html").map(str::to_owned),
                children,
                name,
                type_name,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn descriptions_join_the_types() {
        let described = BTreeMap::from([
            (
                "t".to_owned(),
                json!({"value": "[2] float", "html": "<b>Tensor</b>"}),
            ),
            (
                "vs".to_owned(),
                json!({"value": "2 tensors", "children": [["w", "[2]"], ["b", "[1]"]]}),
            ),
        ]);
        let types = vec![
            ("vs".to_owned(), "VarStore".to_owned()),
            ("t".to_owned(), "Tensor".to_owned()),
            ("n".to_owned(), "i32".to_owned()),
        ];
        let v = views(types, &described);
        assert_eq!(
            v.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
            ["n", "t", "vs"]
        );
        assert_eq!(v[0].value, "");
        assert_eq!(v[1].html.as_deref(), Some("<b>Tensor</b>"));
        assert_eq!(
            v[2].children,
            [
                ("w".to_owned(), "[2]".to_owned()),
                ("b".to_owned(), "[1]".to_owned())
            ]
        );
    }
}
