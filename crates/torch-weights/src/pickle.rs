//! The part of Python's pickle that `torch.save(state_dict)` writes: read with an allow-list, as
//! `torch.load(weights_only=True)` does (no code runs; an unknown class is kept as its name),
//! and written with only what that allow-list accepts.

use std::collections::HashMap;

/// A value of a torch.save pickle.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// A dict or OrderedDict, in order.
    Dict(Vec<(Value, Value)>),
    /// A class or function by name (`module.name`), not called.
    Global(String),
    /// `Global(...)` called: an object this reader does not rebuild.
    Object(String),
    /// A storage's persistent id: its element type, its key in the archive and its size.
    Storage {
        storage_type: String,
        key: String,
        numel: i64,
    },
    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    Tensor(TensorRef),
    /// The pickle's MARK (internal to the stack).
    Mark,
}

/// A tensor as a view of a storage.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage_type: String,
    pub key: String,
    pub storage_numel: i64,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end =
            end.ok_or_else(|| format!("the pickle ends inside an opcode at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().unwrap_or([0; 2]),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or([0; 4]),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or([0; 8]),
        ))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a GLOBAL without its newline")?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<Value, String> {
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map(Value::Str)
            .map_err(|_| "a string that is not UTF-8".to_owned())
    }
}

fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>, String> {
    let mark = stack
        .iter()
        .rposition(|v| matches!(v, Value::Mark))
        .ok_or("no MARK on the stack")?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Ok(items)
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn ints(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(as_int).collect(),
        _ => None,
    }
}

/// `callable(*args)` for the callables torch.save uses; anything else stays a named object.
fn call(callable: Value, args: Value) -> Result<Value, String> {
    let Value::Global(name) = callable else {
        return Ok(Value::Object("(a call of a non-class)".into()));
    };
    let args = match args {
        Value::Tuple(a) => a,
        other => vec![other],
    };
    match name.as_str() {
        "collections.OrderedDict" | "builtins.dict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let bad = || format!("{name} with arguments it does not take: {args:?}");
            let Some(Value::Storage {
                storage_type,
                key,
                numel,
            }) = args.first()
            else {
                return Err(bad());
            };
            let offset = args.get(1).and_then(as_int).ok_or_else(bad)?;
            let size = args.get(2).and_then(ints).ok_or_else(bad)?;
            let stride = args.get(3).and_then(ints).ok_or_else(bad)?;
            if size.len() != stride.len() {
                return Err(bad());
            }
            Ok(Value::Tensor(TensorRef {
                storage_type: storage_type.clone(),
                key: key.clone(),
                storage_numel: *numel,
                offset,
                size,
                stride,
            }))
        }
        // nn.Parameter(data): the data.
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            Ok(args.into_iter().next().unwrap_or(Value::None))
        }
        _ => Ok(Value::Object(name)),
    }
}

/// The value a pickle holds.
pub fn load(data: &[u8]) -> Result<Value, String> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "an empty stack".to_owned());
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            } // PROTO
            0x95 => {
                r.u64()?;
            } // FRAME
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Value::Mark),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(i64::from(r.u32()? as i32))),
            b'K' => stack.push(Value::Int(i64::from(r.u8()?))),
            b'M' => stack.push(Value::Int(i64::from(r.u16()?))),
            0x8a => {
                let n = r.u8()? as usize;
                let bytes = r.take(n)?;
                if n > 8 {
                    return Err(format!("an integer of {n} bytes"));
                }
                let mut v: i64 = 0;
                for (i, b) in bytes.iter().enumerate() {
                    v |= i64::from(*b) << (8 * i);
                }
                if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(
                r.take(8)?.try_into().unwrap_or([0; 8]),
            ))),
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(r.string(n)?);
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(r.string(n)?);
            }
            0x8d => {
                let n = r.u64()? as usize;
                stack.push(r.string(n)?);
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(format!("{m}.{n}"))),
                    _ => return Err("STACK_GLOBAL without two strings".into()),
                }
            }
            b'q' => {
                let k = u32::from(r.u8()?);
                memo.insert(k, stack.last().cloned().ok_or("BINPUT on an empty stack")?);
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(
                    k,
                    stack
                        .last()
                        .cloned()
                        .ok_or("LONG_BINPUT on an empty stack")?,
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, stack.last().cloned().ok_or("MEMOIZE on an empty stack")?);
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    u32::from(r.u8()?)
                } else {
                    r.u32()?
                };
                stack.push(
                    memo.get(&k)
                        .cloned()
                        .ok_or_else(|| format!("memo {k} unset"))?,
                );
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err("a TUPLE of more items than the stack holds".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                let storage = match pid {
                    Value::Tuple(items) if items.len() >= 5 => {
                        match (&items[0], &items[1], &items[2], as_int(&items[4])) {
                            (Value::Str(tag), Value::Global(t), Value::Str(key), Some(numel))
                                if tag == "storage" =>
                            {
                                Value::Storage {
                                    storage_type: t.clone(),
                                    key: key.clone(),
                                    numel,
                                }
                            }
                            _ => {
                                return Err(format!(
                                    "a persistent id torch does not write: {items:?}"
                                ));
                            }
                        }
                    }
                    other => {
                        return Err(format!("a persistent id torch does not write: {other:?}"));
                    }
                };
                stack.push(storage);
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(call(callable, args)?);
            }
            b'b' => {
                // BUILD: an object's state (an OrderedDict's `_metadata`, a Parameter's hooks):
                // nothing a state_dict's tensors need.
                pop(&mut stack)?;
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return Err("SETITEM on something not a dict".into()),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err("SETITEMS on something not a dict".into()),
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err("APPEND on something not a list".into()),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err("APPENDS on something not a list".into()),
                }
            }
            other => {
                return Err(format!(
                    "pickle opcode 0x{other:02x} at byte {}, which torch.save does not write",
                    r.pos - 1
                ));
            }
        }
    }
}

/// One tensor of a state_dict to write: a whole, contiguous storage of its own.
pub struct Entry {
    pub name: String,
    /// `FloatStorage`, `LongStorage`, ...
    pub storage_type: &'static str,
    /// The storage's file in the archive's `data/` folder.
    pub key: String,
    pub numel: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

/// Writes the pickle of an OrderedDict of tensors, as `torch.save(state_dict)` does (protocol
/// 2), with only what `torch.load(weights_only=True)` accepts.
pub fn dump_state_dict(entries: &[Entry]) -> Vec<u8> {
    let mut out = vec![0x80, 2];
    let global = |out: &mut Vec<u8>, module: &str, name: &str| {
        out.push(b'c');
        out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    };
    let string = |out: &mut Vec<u8>, s: &str| {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let int = |out: &mut Vec<u8>, v: i64| {
        if let Ok(small) = i32::try_from(v) {
            out.push(b'J');
            out.extend_from_slice(&small.to_le_bytes());
        } else {
            out.extend_from_slice(&[0x8a, 8]);
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    let ordered_dict = |out: &mut Vec<u8>| {
        global(out, "collections", "OrderedDict");
        out.extend_from_slice(b")R");
    };
    ordered_dict(&mut out);
    out.push(b'(');
    for Entry {
        name,
        storage_type,
        key,
        numel,
        size,
        stride,
    } in entries
    {
        string(&mut out, name);
        global(&mut out, "torch._utils", "_rebuild_tensor_v2");
        out.push(b'(');
        // The storage's persistent id.
        out.push(b'(');
        string(&mut out, "storage");
        global(&mut out, "torch", storage_type);
        string(&mut out, key);
        string(&mut out, "cpu");
        int(&mut out, *numel);
        out.extend_from_slice(b"tQ");
        int(&mut out, 0);
        for dims in [size, stride] {
            out.push(b'(');
            for &d in dims {
                int(&mut out, d);
            }
            out.push(b't');
        }
        out.push(0x89); // requires_grad = False
        ordered_dict(&mut out); // backward hooks
        out.extend_from_slice(b"tR");
    }
    out.extend_from_slice(b"u.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let entry = |name: &str, storage_type, key: &str, numel, size: Vec<i64>, stride| Entry {
            name: name.into(),
            storage_type,
            key: key.into(),
            numel,
            size,
            stride,
        };
        let entries = vec![
            entry("fc.weight", "FloatStorage", "0", 6, vec![2, 3], vec![3, 1]),
            entry("bn.n", "LongStorage", "1", 1, vec![], vec![]),
            entry("big", "ByteStorage", "2", 1 << 33, vec![1 << 33], vec![1]),
        ];
        let Value::Dict(items) = load(&dump_state_dict(&entries)).unwrap() else {
            panic!("not a dict")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].0, Value::Str("fc.weight".into()));
        assert_eq!(
            items[0].1,
            Value::Tensor(TensorRef {
                storage_type: "torch.FloatStorage".into(),
                key: "0".into(),
                storage_numel: 6,
                offset: 0,
                size: vec![2, 3],
                stride: vec![3, 1]
            })
        );
        let Value::Tensor(big) = &items[2].1 else {
            panic!()
        };
        assert_eq!(big.size, vec![1 << 33]);
    }

    #[test]
    fn code_is_never_run_and_bad_pickles_are_errors() {
        // os.system("echo hi") as a pickle: the call is kept as a name, nothing runs.
        let evil = b"cos\nsystem\n(X\x07\x00\x00\x00echo hitR.";
        assert_eq!(load(evil).unwrap(), Value::Object("os.system".into()));
        assert!(
            load(b"\x80\x02}q\x00(X\x01\x00")
                .unwrap_err()
                .contains("ends inside")
        );
        assert!(load(b"\x80\x02\xff").unwrap_err().contains("0xff"));
    }
}
