//! What tch leaves out of its bindings and its special cases, exactly as tch-rs's `gen/gen.ml`
//! lists them: a notebook written against tch sees the same names whichever PyTorch made them.

/// Operators tch does not bind (hand-written in tch, ambiguous, or not callable from C).
pub const EXCLUDED_FUNCTIONS: &[&str] = &[
    "multi_margin_loss",
    "multi_margin_loss_out",
    "log_softmax_backward_data",
    "softmax_backward_data",
    "clone",
    "copy",
    "copy_out",
    "copy_",
    "conv_transpose2d_backward_out",
    "conv_transpose3d_backward_out",
    "slow_conv_transpose2d_backward_out",
    "slow_conv_transpose3d_backward_out",
    "slow_conv3d_backward_out",
    "normal",
    "_cufft_set_plan_cache_max_size",
    "_cufft_clear_plan_cache",
    "backward",
    "_amp_non_finite_check_and_unscale_",
    "_cummin_helper",
    "_cummax_helper",
    "retain_grad",
    "_validate_sparse_coo_tensor_args",
    "_sparse_semi_structured_addmm",
    "_backward",
    "size",
    "stride",
    "_assert_async",
    "gradient",
    "linalg_vector_norm",
    "linalg_vector_norm_out",
    "linalg_matrix_norm",
    "linalg_matrix_norm_out",
    "linalg__powsum",
    // Declared since PyTorch 2.13; tch has them by hand (tch 0.26's list).
    "dim",
    "numel",
    "is_contiguous",
    // Ambiguous calls in C++.
    "normal_out",
    "bernoulli_out",
    "nested_tensor",
    "arange_out",
];

pub const EXCLUDED_PREFIXES: &[&str] = &[
    "_thnn_",
    "_th_",
    "thnn_",
    "th_",
    "_foreach",
    "_amp_foreach",
    "_nested_tensor",
    "_fused_adam",
    "_fused_adagrad",
    "sym_",
    "_fused_sgd",
    "fbgemm_",
];

pub const EXCLUDED_SUFFIXES: &[&str] = &["_forward", "_forward_out"];

/// Their `TensorOptions` argument, which has a default, is left out.
pub const NO_TENSOR_OPTIONS: &[&str] = &[
    "zeros_like",
    "empty_like",
    "full_like",
    "ones_like",
    "rand_like",
    "randint_like",
    "randn_like",
];

/// Their Rust method is `g_name` (tch's operator traits own `add`, `mul`, ...).
pub const PREFIXED_FUNCTIONS: &[&str] = &[
    "add",
    "add_",
    "div",
    "div_",
    "mul",
    "mul_",
    "sub",
    "sub_",
    "nll_loss",
    "to_mkldnn",
];

/// Scalars with a default are left out of the Rust API, except for these operators'.
pub const WITH_OPTIONAL_SCALAR_ARGS: &[&str] = &["arange", "baddbmm"];

/// Whether tch leaves out the operator `name` whatever its arguments.
pub fn excluded(name: &str) -> bool {
    EXCLUDED_PREFIXES.iter().any(|p| name.starts_with(p))
        || EXCLUDED_SUFFIXES.iter().any(|s| name.ends_with(s))
        || EXCLUDED_FUNCTIONS.contains(&name)
}
