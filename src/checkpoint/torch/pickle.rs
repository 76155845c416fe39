//! A restricted reader of the pickle stream torch.save writes (`data.pkl`, protocols 2–5).
//!
//! It is a small stack machine that builds inert values in an arena and never calls
//! anything: `REDUCE` of a tensor-rebuild global records a tensor view, of an
//! `OrderedDict` an empty mapping, and of anything else a placeholder object. Every other
//! global is only a name, reported by the caller. The work is bounded: opcodes, memo
//! entries, mark nesting, and the stream's size (checked by the caller before reading it).
//! Strings are borrowed from the stream: a state dict pickles two for each tensor (its name
//! and its storage's key), and copying 40,000 of them cost more than parsing them.

use std::borrow::Cow;

use super::error::TorchProblem;
use super::globals::Global;
use crate::checkpoint::Dtype;

/// Most opcodes one pickle may execute.
pub const MAX_OPCODES: u64 = 64 << 20;
/// Most memo entries; memo keys are below it too.
pub const MAX_MEMO: u64 = 16 << 20;
/// Deepest nesting of `MARK`s (tuples, lists and dicts being built inside each other).
pub const MAX_MARK_DEPTH: u64 = 1000;

/// Position of a value in the [`Pickle`] arena.
pub(crate) type Id = u32;

/// An unset memo slot (the arena never reaches it: it is bounded by [`MAX_OPCODES`]).
const NO_ID: Id = Id::MAX;

/// A storage named by a persistent id `('storage', class, key, location, numel)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Storage<'a> {
    /// The element type of a typed storage class; `None` for `UntypedStorage` (bytes).
    pub(crate) dtype: Option<Dtype>,
    /// Whether the storage class names an element type bnaudit has no counterpart of.
    pub(crate) unknown_type: bool,
    /// Its key: the entry `data/<key>` of the archive (a string in what torch.save writes,
    /// an integer written out in some others).
    pub(crate) key: Cow<'a, str>,
}

/// A tensor view as `_rebuild_tensor_v2/v3` receive it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TensorView<'a> {
    /// The storage value.
    pub(crate) storage: Id,
    /// Offset into the storage, in elements.
    pub(crate) offset: u64,
    /// Shape.
    pub(crate) shape: &'a [u64],
    /// Strides, in elements.
    pub(crate) stride: &'a [u64],
    /// The dtype argument of `_rebuild_tensor_v3`: `Some(None)` for one bnaudit cannot decode.
    pub(crate) dtype: Option<Option<Dtype>>,
}

/// A tensor as the [`Pickle`] keeps it: its shape and strides are runs of [`Pickle::dims`]
/// (one pool instead of two vectors and a box for each of 20,000 tensors).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tensor {
    storage: Id,
    offset: u64,
    /// Where the shape starts in the pool; the strides follow it.
    dims: u32,
    rank: u32,
    dtype: Option<Option<Dtype>>,
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// An integer that does not.
    BigInt,
    /// A float.
    Float(f64),
    /// A string, borrowed from the stream.
    Str(&'a str),
    /// Bytes (kept by length only: nothing here needs their content).
    Bytes(usize),
    /// A tuple: its items, a run of the parser's pool (tuples are never changed, and one
    /// pool spares an allocation for each of the four a tensor pickles). Only the parser
    /// reads them, so the pool is not kept.
    Tuple(Span),
    /// A list (or a set: both are only walked past).
    List(Vec<Id>),
    /// A dict or `OrderedDict`, items in order.
    Dict(Vec<(Id, Id)>),
    /// A global, classified.
    Global(Global),
    /// A storage: its index in [`Pickle::storages`] (kept apart so that a value stays
    /// small: the arena holds a hundred thousand of them).
    Storage(u32),
    /// A tensor: its index in [`Pickle::tensors`].
    Tensor(u32),
    /// An object of (or the result of calling) a global that is not understood.
    Object {
        /// Dotted name of the global.
        class: Box<str>,
    },
}

/// A run of a tuple pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Span {
    start: u32,
    len: u32,
}

/// A parsed pickle: its values and the one `STOP` returned.
#[derive(Debug)]
pub(crate) struct Pickle<'a> {
    /// Every value built, referred to by [`Id`].
    pub(crate) values: Vec<Value<'a>>,
    storages: Vec<Storage<'a>>,
    tensors: Vec<Tensor>,
    /// The shapes and strides of the tensors.
    dims: Vec<u64>,
    /// The top-level object.
    pub(crate) root: Id,
    /// Dotted names of the globals that are not understood, in order of first appearance.
    pub(crate) unknown_globals: Vec<Box<str>>,
}

impl<'a> Pickle<'a> {
    /// The value `id`.
    pub(crate) fn get(&self, id: Id) -> &Value<'a> {
        &self.values[id as usize]
    }

    /// The storage `id`, if it is one.
    pub(crate) fn storage(&self, id: Id) -> Option<&Storage<'a>> {
        match self.values[id as usize] {
            Value::Storage(i) => Some(&self.storages[i as usize]),
            _ => None,
        }
    }

    /// The tensor `id`, if it is one.
    pub(crate) fn tensor(&self, id: Id) -> Option<TensorView<'_>> {
        let Value::Tensor(i) = self.values[id as usize] else {
            return None;
        };
        let t = &self.tensors[i as usize];
        let dims = &self.dims[t.dims as usize..][..2 * t.rank as usize];
        let (shape, stride) = dims.split_at(t.rank as usize);
        Some(TensorView {
            storage: t.storage,
            offset: t.offset,
            shape,
            stride,
            dtype: t.dtype,
        })
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Start of the opcode being executed, for errors.
    op_at: usize,
    values: Vec<Value<'a>>,
    storages: Vec<Storage<'a>>,
    /// The items of every tuple.
    items: Vec<Id>,
    tensors: Vec<Tensor>,
    dims: Vec<u64>,
    stack: Vec<Id>,
    /// Where on the stack each open mark is, innermost last (as CPython's unpickler keeps
    /// them): the values above the innermost one are a slice of the stack.
    marks: Vec<usize>,
    /// Memo slots by key ([`NO_ID`] when unset): keys are small and dense in what
    /// torch.save writes, and a vector avoids hashing each of them.
    memo: Vec<Id>,
    /// Memo slots set.
    memo_len: u64,
    unknown: Vec<Box<str>>,
    /// Immutable values built once and shared: `None`, `False`, `True`, `()`, and the
    /// integers below [`SHARED_INTS`] (every tensor pickles its offset, shape, strides and
    /// `requires_grad` as such; sharing them halves the arena of a state dict).
    shared: [Id; 4],
    shared_ints: Vec<Id>,
}

/// Integers `0..SHARED_INTS` are built once each (the one-byte and two-byte `BININT`s).
const SHARED_INTS: usize = 1 << 16;

/// What [`Machine::shared`] holds, by index.
#[derive(Clone, Copy)]
enum Constant {
    None,
    False,
    True,
    EmptyTuple,
}

/// The ids of tuple `span` in the pool `items`.
fn items(items: &[Id], span: Span) -> &[Id] {
    &items[span.start as usize..][..span.len as usize]
}

/// A tuple of `ids`, added to the pool `items`.
fn tuple<'a>(items: &mut Vec<Id>, ids: &[Id]) -> Value<'a> {
    // Both below MAX_OPCODES: every item was pushed on the stack by an opcode.
    let span = Span {
        start: items.len() as u32,
        len: ids.len() as u32,
    };
    items.extend_from_slice(ids);
    Value::Tuple(span)
}

/// Parses a pickle stream into inert values.
pub(crate) fn parse(bytes: &[u8]) -> Result<Pickle<'_>, TorchProblem> {
    let mut m = Machine {
        bytes,
        pos: 0,
        op_at: 0,
        // Before small values were shared, a state dict's pickle built about one value per
        // 7.5 bytes (20,000 tensors: 313,000 values from 2.3 MB), so a quarter of its size
        // covers it: reserved once, the arena is not copied while it grows, and pages of the
        // reserve that stay unused are never touched.
        values: Vec::with_capacity(bytes.len() / 4),
        storages: Vec::with_capacity(bytes.len() / 64),
        // Each tensor pickles about one tuple item per 9 bytes.
        items: Vec::with_capacity(bytes.len() / 8),
        // About one tensor per 120 bytes, with a shape and strides of one to four numbers.
        tensors: Vec::with_capacity(bytes.len() / 64),
        dims: Vec::with_capacity(bytes.len() / 16),
        stack: Vec::new(),
        marks: Vec::new(),
        // torch.save memoizes about one value per 15 bytes; growing the memo by doubling
        // cost more than reserving it.
        memo: Vec::with_capacity(bytes.len() / 12),
        memo_len: 0,
        unknown: Vec::new(),
        shared: [NO_ID; 4],
        shared_ints: Vec::new(),
    };
    let mut ops = 0u64;
    loop {
        ops += 1;
        if ops > MAX_OPCODES {
            return Err(TorchProblem::Limit {
                what: "pickle opcode count",
                limit: MAX_OPCODES,
                found: ops,
            });
        }
        m.op_at = m.pos;
        let op = m.u8()?;
        if op == b'.' {
            let root = m.pop()?;
            return Ok(Pickle {
                values: m.values,
                storages: m.storages,
                tensors: m.tensors,
                dims: m.dims,
                root,
                unknown_globals: m.unknown,
            });
        }
        m.step(op)?;
    }
}

impl<'a> Machine<'a> {
    fn err(&self, what: impl Into<String>) -> TorchProblem {
        TorchProblem::Pickle {
            what: what.into(),
            at: self.op_at,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchProblem> {
        let bytes = self.bytes;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| self.err("stream ends inside an opcode (truncated data.pkl)"))?;
        let s = &bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, TorchProblem> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], TorchProblem> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn len_u32(&mut self) -> Result<usize, TorchProblem> {
        Ok(u32::from_le_bytes(self.le()?) as usize)
    }

    fn len_u64(&mut self) -> Result<usize, TorchProblem> {
        let n = u64::from_le_bytes(self.le()?);
        usize::try_from(n).map_err(|_| self.err("length does not fit in memory"))
    }

    /// Reads a newline-terminated line (the text arguments of `GLOBAL`).
    fn line(&mut self) -> Result<&'a str, TorchProblem> {
        let bytes = self.bytes;
        let rest = &bytes[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let line = std::str::from_utf8(&rest[..n]).map_err(|_| self.err("line is not UTF-8"))?;
        self.pos += n + 1;
        Ok(line)
    }

    fn text(&mut self, n: usize) -> Result<&'a str, TorchProblem> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s),
            Err(_) => Err(self.err("string is not UTF-8")),
        }
    }

    fn alloc(&mut self, v: Value<'a>) -> Id {
        // Bounded by MAX_OPCODES, far below u32::MAX.
        let id = self.values.len() as Id;
        self.values.push(v);
        id
    }

    fn push(&mut self, v: Value<'a>) {
        let id = self.alloc(v);
        self.stack.push(id);
    }

    /// Pushes a shared constant, building it the first time.
    fn push_constant(&mut self, c: Constant) {
        let mut id = self.shared[c as usize];
        if id == NO_ID {
            id = self.alloc(match c {
                Constant::None => Value::None,
                Constant::False => Value::Bool(false),
                Constant::True => Value::Bool(true),
                Constant::EmptyTuple => Value::Tuple(Span { start: 0, len: 0 }),
            });
            self.shared[c as usize] = id;
        }
        self.stack.push(id);
    }

    /// Pushes an integer, shared when it is small.
    fn push_int(&mut self, v: i64) {
        let Some(slot) = usize::try_from(v).ok().filter(|&v| v < SHARED_INTS) else {
            return self.push(Value::Int(v));
        };
        if self.shared_ints.is_empty() {
            self.shared_ints = vec![NO_ID; SHARED_INTS];
        }
        let mut id = self.shared_ints[slot];
        if id == NO_ID {
            id = self.alloc(Value::Int(v));
            self.shared_ints[slot] = id;
        }
        self.stack.push(id);
    }

    fn pop(&mut self) -> Result<Id, TorchProblem> {
        let id = self.top()?;
        self.stack.pop();
        Ok(id)
    }

    fn top(&self) -> Result<Id, TorchProblem> {
        if self.marks.last() == Some(&self.stack.len()) {
            return Err(self.err("value expected, found a mark"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| self.err("stack underflow"))
    }

    /// Closes the innermost mark: where its values start on the stack. The caller takes
    /// them (`stack[at..]`) and truncates the stack to `at`.
    fn pop_mark(&mut self) -> Result<usize, TorchProblem> {
        self.marks
            .pop()
            .ok_or_else(|| self.err("no mark on the stack"))
    }

    /// Closes the innermost mark, its values moved into a tuple.
    fn tuple_from_mark(&mut self) -> Result<Value<'a>, TorchProblem> {
        let at = self.pop_mark()?;
        let v = tuple(&mut self.items, &self.stack[at..]);
        self.stack.truncate(at);
        Ok(v)
    }

    /// Closes the innermost mark, its values taken off the stack.
    fn vec_from_mark(&mut self) -> Result<Vec<Id>, TorchProblem> {
        let at = self.pop_mark()?;
        Ok(self.stack.split_off(at))
    }

    fn memo_put(&mut self, key: u32) -> Result<(), TorchProblem> {
        let id = self.top()?;
        let limit = |found| TorchProblem::Limit {
            what: "pickle memo size",
            limit: MAX_MEMO,
            found,
        };
        let slot = key as usize;
        if key as u64 >= MAX_MEMO {
            return Err(limit(key as u64 + 1));
        }
        if slot >= self.memo.len() {
            self.memo.resize(slot + 1, NO_ID);
        }
        if self.memo[slot] == NO_ID {
            self.memo_len += 1;
        }
        self.memo[slot] = id;
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), TorchProblem> {
        let id = self
            .memo
            .get(key as usize)
            .copied()
            .filter(|&id| id != NO_ID)
            .ok_or_else(|| self.err(format!("memo key {key} read before it was written")))?;
        self.stack.push(id);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) {
        let g = Global::classify(module, name);
        if let Global::Other(dotted) = &g
            && !self.unknown.contains(dotted)
        {
            self.unknown.push(dotted.clone());
        }
        self.push(Value::Global(g));
    }

    fn str_of(&self, id: Id) -> Option<&'a str> {
        match self.values[id as usize] {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn tuple_items(&self, id: Id) -> Option<&[Id]> {
        match &self.values[id as usize] {
            Value::Tuple(span) => Some(items(&self.items, *span)),
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    fn step(&mut self, op: u8) -> Result<(), TorchProblem> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if !(2..=5).contains(&proto) {
                    return Err(self.err(format!("pickle protocol {proto} (torch.save writes 2)")));
                }
            }
            // FRAME: a length prefix of the bytes that follow, which are read in place.
            0x95 => {
                self.take(8)?;
            }
            b'(' => {
                let depth = self.marks.len() as u64 + 1;
                if depth > MAX_MARK_DEPTH {
                    return Err(TorchProblem::Limit {
                        what: "pickle nesting depth",
                        limit: MAX_MARK_DEPTH,
                        found: depth,
                    });
                }
                self.marks.push(self.stack.len());
            }
            b'}' => self.push(Value::Dict(Vec::new())),
            b']' => self.push(Value::List(Vec::new())),
            b')' => self.push_constant(Constant::EmptyTuple),
            0x8f => self.push(Value::List(Vec::new())), // EMPTY_SET
            b'N' => self.push_constant(Constant::None),
            0x88 => self.push_constant(Constant::True),
            0x89 => self.push_constant(Constant::False),
            b'J' => {
                let v = i32::from_le_bytes(self.le()?);
                self.push_int(v.into());
            }
            b'K' => {
                let v = self.u8()?;
                self.push_int(v.into());
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?);
                self.push_int(v.into());
            }
            0x8a => {
                let n = self.u8()? as usize;
                self.long(n)?;
            }
            0x8b => {
                let n = self.len_u32()?;
                self.long(n)?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.le()?);
                self.push(Value::Float(v));
            }
            b'X' => {
                let n = self.len_u32()?;
                let s = self.text(n)?;
                self.push(Value::Str(s));
            }
            0x8c => {
                let n = self.u8()? as usize;
                let s = self.text(n)?;
                self.push(Value::Str(s));
            }
            0x8d => {
                let n = self.len_u64()?;
                let s = self.text(n)?;
                self.push(Value::Str(s));
            }
            // SHORT_BINSTRING, BINSTRING: Python 2 str, read as text when it is.
            b'U' | b'T' => {
                let n = if op == b'U' {
                    self.u8()? as usize
                } else {
                    self.len_u32()?
                };
                let bytes = self.take(n)?;
                let v = match std::str::from_utf8(bytes) {
                    Ok(s) => Value::Str(s),
                    Err(_) => Value::Bytes(n),
                };
                self.push(v);
            }
            b'C' | b'B' | 0x8e | 0x96 => {
                let n = match op {
                    b'C' => self.u8()? as usize,
                    b'B' => self.len_u32()?,
                    _ => self.len_u64()?,
                };
                self.take(n)?;
                self.push(Value::Bytes(n));
            }
            b'q' => {
                let k = self.u8()?;
                self.memo_put(k.into())?;
            }
            b'r' => {
                let k = u32::from_le_bytes(self.le()?);
                self.memo_put(k)?;
            }
            0x94 => {
                // MEMOIZE's key is the memo's size, as in Python.
                let k = self.memo_len as u32;
                self.memo_put(k)?;
            }
            b'h' => {
                let k = self.u8()?;
                self.memo_get(k.into())?;
            }
            b'j' => {
                let k = u32::from_le_bytes(self.le()?);
                self.memo_get(k)?;
            }
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                let at = self.pop_mark()?;
                self.stack.truncate(at);
            }
            b'2' => {
                let id = self.top()?;
                self.stack.push(id);
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name);
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name)) else {
                    return Err(self.err("STACK_GLOBAL of non-strings"));
                };
                self.global(module, name);
            }
            b't' => {
                let v = self.tuple_from_mark()?;
                self.push(v);
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut ids = [0; 3];
                for id in ids[..n].iter_mut().rev() {
                    *id = self.pop()?;
                }
                let v = tuple(&mut self.items, &ids[..n]);
                self.push(v);
            }
            b'l' | 0x91 => {
                let items = self.vec_from_mark()?;
                self.push(Value::List(items));
            }
            b'd' => {
                let items = self.vec_from_mark()?;
                let pairs = self.pairs(&items)?;
                self.push(Value::Dict(pairs));
            }
            b'a' => {
                let item = self.pop()?;
                let list = self.top()?;
                self.extend(list, &[item]);
            }
            b'e' | 0x90 => {
                let items = self.vec_from_mark()?;
                let list = self.top()?;
                self.extend(list, &items);
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let dict = self.top()?;
                self.set_items(dict, &[(key, value)]);
            }
            b'u' => {
                let items = self.vec_from_mark()?;
                let pairs = self.pairs(&items)?;
                let dict = self.top()?;
                self.set_items(dict, &pairs);
            }
            b'b' => {
                // BUILD sets an object's state; no state matters here.
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent(pid)?;
                // Below MAX_OPCODES: one storage per opcode.
                self.storages.push(storage);
                self.push(Value::Storage((self.storages.len() - 1) as u32));
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let v = self.call(func, args)?;
                self.push(v);
            }
            0x81 => {
                let _args = self.pop()?;
                let cls = self.pop()?;
                let v = self.instance(cls);
                self.push(v);
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let _args = self.pop()?;
                let cls = self.pop()?;
                let v = self.instance(cls);
                self.push(v);
            }
            _ => {
                return Err(self.err(format!(
                    "opcode 0x{op:02x} is not one torch.save writes (not a torch.save pickle)"
                )));
            }
        }
        Ok(())
    }

    /// LONG1/LONG4: a little-endian two's-complement integer of `n` bytes.
    fn long(&mut self, n: usize) -> Result<(), TorchProblem> {
        let bytes = self.take(n)?;
        if n == 0 {
            self.push_int(0);
        } else if n <= 8 {
            let negative = bytes[n - 1] & 0x80 != 0;
            let mut buf = if negative { [0xff; 8] } else { [0; 8] };
            buf[..n].copy_from_slice(bytes);
            self.push_int(i64::from_le_bytes(buf));
        } else {
            self.push(Value::BigInt);
        }
        Ok(())
    }

    fn pairs(&self, items: &[Id]) -> Result<Vec<(Id, Id)>, TorchProblem> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    fn extend(&mut self, list: Id, items: &[Id]) {
        // Appends to a placeholder (a list subclass) are dropped with it.
        if let Value::List(v) = &mut self.values[list as usize] {
            v.extend_from_slice(items);
        }
    }

    fn set_items(&mut self, dict: Id, pairs: &[(Id, Id)]) {
        // Items of a placeholder (a dict subclass such as a hyper-parameter class) are
        // dropped with it: no state dict lives there.
        if let Value::Dict(v) = &mut self.values[dict as usize] {
            v.extend_from_slice(pairs);
        }
    }

    /// `NEWOBJ`: an instance of `cls`, which is never created.
    fn instance(&self, cls: Id) -> Value<'a> {
        match &self.values[cls as usize] {
            Value::Global(Global::OrderedDict) => Value::Dict(Vec::new()),
            Value::Global(Global::Other(name)) => Value::Object {
                class: name.clone(),
            },
            _ => Value::Object {
                class: "<object>".into(),
            },
        }
    }

    /// A persistent id: `('storage', class, key, location, numel)`.
    fn persistent(&self, pid: Id) -> Result<Storage<'a>, TorchProblem> {
        let bad = || self.err("persistent id is not ('storage', class, key, location, numel)");
        let items = self.tuple_items(pid).ok_or_else(bad)?;
        if items.len() != 5 || self.str_of(items[0]) != Some("storage") {
            return Err(bad());
        }
        let key = match self.values[items[2] as usize] {
            Value::Str(s) => Cow::Borrowed(s),
            Value::Int(i) => Cow::Owned(i.to_string()),
            _ => return Err(bad()),
        };
        let (dtype, unknown_type) = match &self.values[items[1] as usize] {
            Value::Global(Global::TypedStorage(d)) => (*d, d.is_none()),
            Value::Global(Global::UntypedStorage) => (None, false),
            _ => return Err(bad()),
        };
        Ok(Storage {
            dtype,
            unknown_type,
            key,
        })
    }

    /// `REDUCE`: what calling `func(*args)` stands for, without calling anything.
    fn call(&mut self, func: Id, args: Id) -> Result<Value<'a>, TorchProblem> {
        // The first arguments are copied out (no call here looks further), so that a tensor
        // can be added while they are read.
        let mut first = [NO_ID; 7];
        let items = self.tuple_items(args).unwrap_or_default();
        let n = items.len().min(first.len());
        first[..n].copy_from_slice(&items[..n]);
        let args = &first[..n];
        let Value::Global(g) = &self.values[func as usize] else {
            return Ok(Value::Object {
                class: "<call>".into(),
            });
        };
        Ok(match g {
            Global::RebuildTensor => self.rebuild(args, None)?,
            Global::RebuildTensorDtype => {
                let dtype = match args.get(6).map(|&d| &self.values[d as usize]) {
                    Some(Value::Global(Global::Dtype(d))) => *d,
                    _ => return Err(self.err("_rebuild_tensor_v3 without a dtype")),
                };
                self.rebuild(args, Some(dtype))?
            }
            Global::RebuildParameter => match args.first() {
                Some(&data) => self.values[data as usize].clone(),
                None => return Err(self.err("_rebuild_parameter without data")),
            },
            Global::RebuildFromType => match (args.first(), args.get(2)) {
                (Some(&f), Some(&a)) => return self.call(f, a),
                _ => return Err(self.err("_rebuild_from_type_v2 without function and arguments")),
            },
            Global::OrderedDict => {
                let mut pairs = Vec::new();
                if let Some(items) = args.first().and_then(|&a| self.tuple_items(a)) {
                    for &p in items {
                        if let Some([k, v]) = self.tuple_items(p) {
                            pairs.push((*k, *v));
                        }
                    }
                }
                Value::Dict(pairs)
            }
            Global::Size => match args.first() {
                Some(&a) => self.values[a as usize].clone(),
                None => Value::Tuple(Span { start: 0, len: 0 }),
            },
            Global::Encode => Value::Bytes(0),
            Global::Other(name) => Value::Object {
                class: name.clone(),
            },
            Global::Device
            | Global::Dtype(_)
            | Global::TypedStorage(_)
            | Global::UntypedStorage => Value::Object {
                class: "<torch object>".into(),
            },
        })
    }

    /// Adds the non-negative integers of tuple `id` to [`Machine::dims`]; their count.
    fn uints(&mut self, id: Id, what: &str) -> Result<usize, TorchProblem> {
        let items = match &self.values[id as usize] {
            Value::Tuple(span) => items(&self.items, *span),
            Value::List(items) => items,
            _ => return Err(self.err(format!("tensor {what} is not a tuple"))),
        };
        for &i in items {
            match self.values[i as usize] {
                Value::Int(v) if v >= 0 => self.dims.push(v as u64),
                _ => {
                    return Err(self.err(format!(
                        "tensor {what} holds a non-integer or negative value"
                    )));
                }
            }
        }
        Ok(items.len())
    }

    fn rebuild(
        &mut self,
        args: &[Id],
        dtype: Option<Option<Dtype>>,
    ) -> Result<Value<'a>, TorchProblem> {
        if args.len() < 4 {
            return Err(self.err("_rebuild_tensor with fewer than 4 arguments"));
        }
        if !matches!(self.values[args[0] as usize], Value::Storage(_)) {
            return Err(self.err("_rebuild_tensor over something that is not a storage"));
        }
        let offset = match self.values[args[1] as usize] {
            Value::Int(v) if v >= 0 => v as u64,
            _ => return Err(self.err("tensor storage offset is not a non-negative integer")),
        };
        let dims = self.dims.len();
        let rank = self.uints(args[2], "size")?;
        if self.uints(args[3], "stride")? != rank {
            return Err(self.err("tensor size and stride differ in length"));
        }
        // Both below MAX_OPCODES: each dimension was pushed by an opcode, each tensor by one.
        self.tensors.push(Tensor {
            storage: args[0],
            offset,
            dims: dims as u32,
            rank: rank as u32,
            dtype,
        });
        Ok(Value::Tensor((self.tensors.len() - 1) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_of_an_unknown_global_is_a_placeholder_and_runs_nothing() {
        // cposix\nsystem\n(X...tR.  — what `__reduce__` to os.system pickles as.
        let mut p = b"\x80\x02cposix\nsystem\nq\x00X\x05\x00\x00\x00touch\x85R.".to_vec();
        let pickle = parse(&p).unwrap();
        assert_eq!(&*pickle.unknown_globals[0], "posix.system");
        assert!(
            matches!(pickle.get(pickle.root), Value::Object { class } if &**class == "posix.system")
        );
        p.truncate(p.len() - 1);
        assert!(matches!(parse(&p), Err(TorchProblem::Pickle { .. })));
    }

    #[test]
    fn memoised_dicts_are_filled_in_place() {
        // {} BINPUT 0, MARK 'a' 1 SETITEMS, POP, BINGET 0, STOP
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01u0h\x00.";
        let pickle = parse(p).unwrap();
        let Value::Dict(items) = pickle.get(pickle.root) else {
            panic!("root is {:?}", pickle.get(pickle.root));
        };
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn nesting_past_the_limit_is_refused() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', MAX_MARK_DEPTH as usize + 1));
        assert!(matches!(
            parse(&p),
            Err(TorchProblem::Limit {
                what: "pickle nesting depth",
                ..
            })
        ));
    }
}
