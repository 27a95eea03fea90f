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

// tch-kernel: the store is a Vec searched by name, not a HashMap. This module is compiled into
// every cell's crate, and HashMap<String, _>'s insert, remove and get were compiled with it each
// time; a notebook holds tens of variables, not thousands.
pub struct VariableStore {
    variables: Vec<(String, Box<dyn std::any::Any + 'static>)>,
}

impl VariableStore {
    pub fn new() -> VariableStore {
        VariableStore {
            variables: Vec::new(),
        }
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.variables.iter().position(|(n, _)| n == name)
    }

    pub fn put_variable<T: 'static>(&mut self, name: &str, value: T) {
        let value: Box<dyn std::any::Any> = Box::new(value);
        match self.position(name) {
            Some(i) => self.variables[i].1 = value,
            None => self.variables.push((name.to_owned(), value)),
        }
    }

    pub fn check_variable<T: 'static>(&mut self, name: &str) -> bool {
        if let Some(i) = self.position(name)
            && self.variables[i].1.downcast_ref::<T>().is_none()
        {
            eprintln!("The type of the variable {name} was redefined, so was lost.",);
            println!("{VARIABLE_CHANGED_TYPE}{name}");
            return false;
        }
        true
    }

    pub fn take_variable<T: 'static>(&mut self, name: &str) -> T {
        match self.position(name) {
            Some(i) => {
                let (_, v) = self.variables.swap_remove(i);
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
                self.variables
                    .push((name.to_owned(), Box::new(std::sync::Arc::new(create()))));
                self.variables.len() - 1
            }
        };
        if let Some(value) = self.variables[i].1.downcast_mut() {
            std::sync::Arc::clone(value)
        } else {
            panic!("lazy_arc {name} changed type");
        }
    }

    pub fn merge(&mut self, mut other: VariableStore) {
        for (name, value) in other.variables.drain(..) {
            match self.position(&name) {
                Some(i) => self.variables[i].1 = value,
                None => self.variables.push((name, value)),
            }
        }
    }
}

pub fn create_variable_store() -> *mut VariableStore {
    Box::into_raw(Box::new(VariableStore::new()))
}
