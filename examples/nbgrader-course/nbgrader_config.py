# nbgrader configuration for a course taught with tch-kernel (Rust cells).
# Copy this file into your course directory (next to source/), or merge it into yours.
c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "rust-dl-101"

# What replaces a solution region in the students' version. The markers sit inside a function
# body, so the signature stays and the stub still compiles: `todo!()` has every return type.
# A student who runs it unchanged gets a panic ("not yet implemented") in the test cell, not a
# compile error in every later cell.
c.ClearSolutions.code_stub = {"rust": "// YOUR CODE HERE\ntodo!()"}
c.ClearSolutions.begin_solution_delimeter = "BEGIN SOLUTION"
c.ClearSolutions.end_solution_delimeter = "END SOLUTION"
c.ClearHiddenTests.begin_test_delimeter = "BEGIN HIDDEN TESTS"
c.ClearHiddenTests.end_test_delimeter = "END HIDDEN TESTS"

# A cell is compiled before it runs: allow for the first cell's compile (about a second with a
# warm cache, up to a minute on a node whose cache is cold).
c.Execute.timeout = 60
