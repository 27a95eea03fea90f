// Copyright 2020 The Evcxr Authors.
//
// Licensed under the Apache License, Version 2.0 <LICENSE or
// https://www.apache.org/licenses/LICENSE-2.0> or the MIT license <LICENSE
// or https://opensource.org/licenses/MIT>, at your option. This file may not be
// copied, modified, or distributed except according to those terms.

// This file is both a module of evcxr and is included via include_str! then
// built as a crate itself. The latter is the primary use-case. It's included as
// a submodule only so that constants can be shared.

pub const VARIABLE_CHANGED_TYPE: &str = "EVCXR_VARIABLE_CHANGED_TYPE:";
pub const USER_ERROR_OCCURRED: &str = "EVCXR_ERROR_OCCURRED";

/// tch-kernel: text on one line (`\\` and `\n` escaped), for the error after
/// [`USER_ERROR_OCCURRED`].
pub fn escape_line(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The text [`escape_line`] escaped.
pub fn unescape_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// tch-kernel: what the store keeps with a variable to snapshot it (see child-protocol's
/// `snapshot_format`, whose `SnapshotSaver` is this same type: a test of the evcxr crate checks it).
pub type Saver = fn(&dyn std::any::Any) -> SaverWrite;
pub type SaverWrite = Box<dyn FnOnce(&std::path::Path) -> Result<u64, String>>;

/// tch-kernel: a variable's description for the debugger's Variables panel (JSON; see
/// child-protocol's `VARIABLES_MARKER`), chosen for its type as the saver is.
pub type Describer = fn(&dyn std::any::Any) -> String;

/// tch-kernel: a variable, with its snapshot saver and whether a cell stored it since the last
/// snapshot. `repr(C)`: the evaluation process reads the store that cells built (each cell and
/// the process compile this file on their own).
#[repr(C)]
pub struct StoredVariable {
    pub name: String,
    pub value: Box<dyn std::any::Any + 'static>,
    pub saver: Option<Saver>,
    pub changed: bool,
    pub describer: Option<Describer>,
    /// Whether the evaluation process has described it since a cell stored it.
    pub described: bool,
}

// tch-kernel: the store is a Vec searched by name, not a HashMap. This module is compiled into
// every cell's crate, and HashMap<String, _>'s insert, remove and get were compiled with it each
// time; a notebook holds tens of variables, not thousands.
#[repr(C)]
pub struct VariableStore {
    pub variables: Vec<StoredVariable>,
}

impl VariableStore {
    pub fn new() -> VariableStore {
        VariableStore {
            variables: Vec::new(),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.variables.iter().position(|v| v.name == name)
    }

    pub fn put_variable<T: 'static>(&mut self, name: &str, value: T) {
        self.put_saved_variable(name, None, None, value);
    }

    /// tch-kernel: stores a variable with the saver and describer chosen for its type (chosen
    /// from a reference to the value, before it moves here: hence the order).
    pub fn put_saved_variable<T: 'static>(
        &mut self,
        name: &str,
        saver: Option<Saver>,
        describer: Option<Describer>,
        value: T,
    ) {
        let value: Box<dyn std::any::Any> = Box::new(value);
        let stored = StoredVariable {
            name: name.to_owned(),
            value,
            saver,
            changed: true,
            describer,
            described: false,
        };
        match self.position(name) {
            Some(i) => self.variables[i] = stored,
            None => self.variables.push(stored),
        }
    }

    pub fn check_variable<T: 'static>(&mut self, name: &str) -> bool {
        // tch-kernel: no let chain: cells are compiled in edition 2021 (`crate::CELL_EDITION`).
        let redefined = self
            .position(name)
            .is_some_and(|i| self.variables[i].value.downcast_ref::<T>().is_none());
        if redefined {
            eprintln!("The type of the variable {name} was redefined, so was lost.",);
            println!("{VARIABLE_CHANGED_TYPE}{name}");
            return false;
        }
        true
    }

    pub fn take_variable<T: 'static>(&mut self, name: &str) -> T {
        match self.position(name) {
            Some(i) => {
                let v = self.variables.swap_remove(i).value;
                if let Ok(value) = v.downcast() {
                    *value
                } else {
                    // Shouldn't happen so long as check_variable was called.
                    panic!("Variable changed type");
                }
            }
            None => panic!("Variable '{name}' has gone missing"),
        }
    }

    pub fn lazy_arc<T: 'static, F: FnOnce() -> T>(
        &mut self,
        name: &str,
        create: F,
    ) -> std::sync::Arc<T> {
        let i = match self.position(name) {
            Some(i) => i,
            None => {
                self.put_variable(name, std::sync::Arc::new(create()));
                self.variables.len() - 1
            }
        };
        if let Some(value) = self.variables[i].value.downcast_mut() {
            std::sync::Arc::clone(value)
        } else {
            panic!("lazy_arc {name} changed type");
        }
    }

    pub fn merge(&mut self, mut other: VariableStore) {
        for stored in other.variables.drain(..) {
            match self.position(&stored.name) {
                Some(i) => self.variables[i] = stored,
                None => self.variables.push(stored),
            }
        }
    }
}

pub fn create_variable_store() -> *mut VariableStore {
    Box::into_raw(Box::new(VariableStore::new()))
}
