"""The Jupyter project's kernel conformance suite (jupyter_kernel_test), with real samples for
every test so none is skipped."""

import unittest

import jupyter_kernel_test

from conftest import KERNEL_NAME, TORCH_KERNEL_NAME


class TchKernelConformance(jupyter_kernel_test.KernelTests):
    # The kernel users run (the installed one, with the prelude), right after start, with no
    # wait for rust-analyzer: the completion samples (a path, a `let` of the same cell) are
    # answered from what it knew at install until it is warm.
    kernel_name = TORCH_KERNEL_NAME
    language_name = "rust"
    file_extension = ".rs"

    code_hello_world = 'println!("hello, world");'
    code_stderr = 'eprintln!("something went wrong");'

    completion_samples = [
        {"text": "let zzz_value = 1;\nzzz_", "matches": {"zzz_value"}},
        {"text": "std::mem::swa", "matches": {"swap(x, y)"}},
    ]
    complete_code_samples = ["1 + 1", "let x = 1;", "fn f() -> i32 { 1 }", 'let s = "{";']
    incomplete_code_samples = ["fn f() {", "let v = vec![1,", 'let s = "abc', "let y ="]
    invalid_code_samples = [")", "fn f() { )", "let v = [1, 2);"]

    code_page_something = ":help"
    code_generate_error = 'panic!("this cell fails")'

    code_execute_result = [
        {"code": "1 + 2", "result": "3"},
        {"code": '"hi".to_uppercase()', "result": '"HI"'},
        {"code": "vec![1.5, 2.0]", "result": "[1.5, 2.0]"},
    ]
    code_display_data = [
        {"code": 'display_mime("text/html", "<b>bold</b>")', "mime": "text/html"},
        {"code": 'display_mime("image/svg+xml", "<svg xmlns=\\"http://www.w3.org/2000/svg\\"/>")', "mime": "image/svg+xml"},
    ]

    code_history_pattern = "1 + 2"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "String::new"
    code_clear_output = 'println!("gone"); clear_output();'


class TchKernelIopubWelcome(jupyter_kernel_test.IopubWelcomeTests):
    kernel_name = KERNEL_NAME
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()
