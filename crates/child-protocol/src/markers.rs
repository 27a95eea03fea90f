/// Starts a rich-output record on the child's stdout (display, update, clear): the record is
/// `OUTPUT_MARKER kind US id (US mime US content)*`, every field escaped (see `escape`), so
/// that rich output stays in order with printed text and a record is always one line.
pub const OUTPUT_MARKER: &str = "\u{1e}tch-kernel:output\u{1e}";

/// Starts a panic report on the child's stdout: `PANIC_MARKER thread US location US message`.
pub const PANIC_MARKER: &str = "\u{1e}tch-kernel:panic\u{1e}";

/// Separates the fields of a record or a report (U+001F, unit separator).
pub const FIELD_SEP: char = '\u{1f}';

/// The panic message of `check_interrupt()`: the cell stopped because the user interrupted it.
pub const INTERRUPT_PANIC: &str = "KeyboardInterrupt (tch-kernel)";

/// Written on the child's stderr when the kernel asks (after a cell), followed by the number it
/// asked with: every line the cell wrote on stderr before it is before it in the pipe, so the
/// kernel can wait for the mark instead of guessing how long stderr takes.
pub const STDERR_MARK: &str = "\u{1e}tch-kernel:stderr-mark\u{1e}";

/// Before the end of a run, on stdout: `VARIABLES_MARKER {"names": [..], "described": {name:
/// description}}`, the store's variables and the descriptions of those the run stored (JSON
/// from the prelude's `__tch_variable_describer!`: `value`, and a tensor's `html` and a
/// VarStore's `children`), for the debugger's Variables panel.
pub const VARIABLES_MARKER: &str = "\u{1e}tch-kernel:variables\u{1e}";

/// The prelude's macro (at its crate root) that names a variable's describer, given `&value`.
pub const VARIABLE_DESCRIBER_MACRO: &str = "__tch_variable_describer";

/// A cell's final value, one MIME type at a time: `BEGIN_CONTENT mime`, the content's lines,
/// `END_CONTENT` (the evaluation engine's own format, kept for its display code).
pub const BEGIN_CONTENT: &str = "EVCXR_BEGIN_CONTENT";
pub const END_CONTENT: &str = "EVCXR_END_CONTENT";

/// `INPUT_REQUEST:prompt` (or `INPUT_REQUEST_PASSWORD:prompt`, prompt escaped) asks the
/// kernel for a line from the notebook; the kernel writes back `INPUT_OK` + the escaped line,
/// or `INPUT_ERR` + the escaped reason, on the child's stdin.
pub const INPUT_REQUEST: &str = "EVCXR_INPUT_REQUEST";
pub const INPUT_REQUEST_PASSWORD: &str = "EVCXR_INPUT_REQUEST_PASSWORD";
pub const INPUT_OK: &str = "ok:";
pub const INPUT_ERR: &str = "err:";

/// Environment variable holding `PID:ADDRESS`: the evaluation process's id and the address of
/// its interrupt counter (cells are separate shared objects and cannot link to it). A program a
/// cell starts inherits the variable; the id tells it that the counter is not its own, and that
/// it runs outside a kernel (see `counter_address`).
pub const INTERRUPT_COUNTER_ENV: &str = "EVCXR_INTERRUPT_COUNTER";

/// The value of [`INTERRUPT_COUNTER_ENV`] for the counter at `address` in this process.
pub fn counter_value(address: usize) -> String {
    format!("{}:{address}", std::process::id())
}

/// The counter's address when `value` (of [`INTERRUPT_COUNTER_ENV`], or [`PASSWORDS_ENV`]) was
/// set by this process and names a place an `AtomicUsize` can be (not null, aligned).
pub fn counter_address(value: &str) -> Option<usize> {
    let (pid, address) = value.split_once(':')?;
    if pid.parse::<u32>().ok()? != std::process::id() {
        return None;
    }
    let address: usize = address.parse().ok()?;
    (address != 0 && address.is_multiple_of(std::mem::align_of::<std::sync::atomic::AtomicUsize>()))
        .then_some(address)
}


/// Environment variable holding `PID:ADDRESS` (as [`counter_value`] writes it) of the
/// evaluation process's [`PasswordRecord`]: `password()` in a cell records what it returned,
/// and the snapshot of the variables leaves out a `String` that holds it.
pub const PASSWORDS_ENV: &str = "TCH_KERNEL_PASSWORDS";

/// How many passwords a [`PasswordRecord`] remembers (the oldest are forgotten first).
pub const PASSWORD_SLOTS: usize = 64;

/// Hashes of what `password()` returned in this process (in memory only, never written). Its
/// layout is fixed: a cell and the evaluation process each compile their own copy.
#[repr(C)]
pub struct PasswordRecord {
    count: std::sync::atomic::AtomicUsize,
    hashes: [std::sync::atomic::AtomicU64; PASSWORD_SLOTS],
}

impl PasswordRecord {
    pub const fn new() -> PasswordRecord {
        PasswordRecord {
            count: std::sync::atomic::AtomicUsize::new(0),
            hashes: [const { std::sync::atomic::AtomicU64::new(0) }; PASSWORD_SLOTS],
        }
    }

    pub fn add(&self, value: &str) {
        use std::sync::atomic::Ordering::SeqCst;
        let slot = self.count.fetch_add(1, SeqCst) % PASSWORD_SLOTS;
        self.hashes[slot].store(fnv1a(value.as_bytes()), SeqCst);
    }

    pub fn holds(&self, value: &str) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let filled = self.count.load(SeqCst).min(PASSWORD_SLOTS);
        let hash = fnv1a(value.as_bytes());
        self.hashes[..filled].iter().any(|h| h.load(SeqCst) == hash)
    }
}

impl Default for PasswordRecord {
    fn default() -> Self {
        PasswordRecord::new()
    }
}

/// FNV-1a, 64 bits: the same on every build (unlike std's hasher), and enough to tell values
/// apart that are not chosen to collide (a password seen in this process, a notebook's path).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
