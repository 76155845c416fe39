//! The Python globals a torch.save pickle may name, and what bnaudit makes of each. Nothing
//! is ever imported or called: a global is only a name we recognise or not.

use crate::checkpoint::Dtype;

/// A global named by `GLOBAL`/`STACK_GLOBAL`, classified.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Global {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    RebuildTensor,
    /// `torch._utils._rebuild_tensor_v3(storage, offset, size, stride, rg, hooks, dtype, ...)`:
    /// the dtype comes as an argument (unsigned and float8 tensors over untyped storages).
    RebuildTensorDtype,
    /// `torch._utils._rebuild_parameter(data, ...)` and `_rebuild_parameter_with_state`.
    RebuildParameter,
    /// `torch._tensor._rebuild_from_type_v2(func, type, args, state)`: a tensor subclass.
    RebuildFromType,
    /// `collections.OrderedDict`.
    OrderedDict,
    /// `torch.Size`.
    Size,
    /// `torch.device`.
    Device,
    /// `_codecs.encode`, how protocol 2 pickles `bytes`.
    Encode,
    /// A `torch.<dtype>` object; `None` for a dtype bnaudit has no counterpart of.
    Dtype(Option<Dtype>),
    /// A typed storage class (`torch.FloatStorage`, …); `None` for an unknown element type.
    TypedStorage(Option<Dtype>),
    /// `torch.storage.UntypedStorage`: bytes, typed by a `_rebuild_tensor_v3` dtype argument.
    UntypedStorage,
    /// Anything else, by dotted name: an inert placeholder.
    Other(Box<str>),
}

/// What an unrecognised global means for someone who would `torch.load` the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Risk {
    /// Would run code under `torch.load(weights_only=False)`.
    Dangerous,
    /// An application class (hyper-parameters, numpy) that is merely not understood.
    Unknown,
}

impl Global {
    /// Classifies `module.name`.
    pub(crate) fn classify(module: &str, name: &str) -> Global {
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensorDtype,
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                Global::RebuildParameter
            }
            ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromType,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch", "Size") => Global::Size,
            ("torch", "device") => Global::Device,
            ("_codecs", "encode") => Global::Encode,
            ("torch.storage", "UntypedStorage") | ("torch", "UntypedStorage") => {
                Global::UntypedStorage
            }
            ("torch", n) if n.ends_with("Storage") => {
                Global::TypedStorage(storage_dtype(&n[..n.len() - "Storage".len()]))
            }
            ("torch", n) if is_dtype_name(n) => Global::Dtype(dtype_named(n)),
            _ => Global::Other(format!("{module}.{name}").into()),
        }
    }
}

/// The element type of `torch.<prefix>Storage`.
fn storage_dtype(prefix: &str) -> Option<Dtype> {
    Some(match prefix {
        "Float" => Dtype::F32,
        "Double" => Dtype::F64,
        "Half" => Dtype::F16,
        "BFloat16" => Dtype::BF16,
        "Long" => Dtype::I64,
        "Int" => Dtype::I32,
        "Short" => Dtype::I16,
        "Char" => Dtype::I8,
        "Byte" => Dtype::U8,
        "Bool" => Dtype::Bool,
        "ComplexFloat" => Dtype::C64,
        "UInt16" => Dtype::U16,
        "UInt32" => Dtype::U32,
        "UInt64" => Dtype::U64,
        "Float8_e4m3fn" => Dtype::F8E4M3,
        "Float8_e5m2" => Dtype::F8E5M2,
        "Float8_e4m3fnuz" => Dtype::F8E4M3Fnuz,
        "Float8_e5m2fnuz" => Dtype::F8E5M2Fnuz,
        "Float8_e8m0fnu" => Dtype::F8E8M0,
        _ => return None,
    })
}

/// The dtype `torch.<name>` pickles as (`torch.float32` is written `torch float32`).
fn dtype_named(name: &str) -> Option<Dtype> {
    Some(match name {
        "float32" | "float" => Dtype::F32,
        "float64" | "double" => Dtype::F64,
        "float16" | "half" => Dtype::F16,
        "bfloat16" => Dtype::BF16,
        "int64" | "long" => Dtype::I64,
        "int32" | "int" => Dtype::I32,
        "int16" | "short" => Dtype::I16,
        "int8" => Dtype::I8,
        "uint8" => Dtype::U8,
        "uint16" => Dtype::U16,
        "uint32" => Dtype::U32,
        "uint64" => Dtype::U64,
        "bool" => Dtype::Bool,
        "complex64" | "cfloat" => Dtype::C64,
        "float8_e4m3fn" => Dtype::F8E4M3,
        "float8_e5m2" => Dtype::F8E5M2,
        "float8_e4m3fnuz" => Dtype::F8E4M3Fnuz,
        "float8_e5m2fnuz" => Dtype::F8E5M2Fnuz,
        "float8_e8m0fnu" => Dtype::F8E8M0,
        _ => return None,
    })
}

/// Whether `torch.<name>` is one of torch's dtype objects, decodable or not.
fn is_dtype_name(name: &str) -> bool {
    const UNDECODED: &[&str] = &[
        "complex32",
        "chalf",
        "complex128",
        "cdouble",
        "float4_e2m1fn_x2",
        "qint8",
        "qint32",
        "quint8",
        "quint4x2",
        "quint2x4",
    ];
    dtype_named(name).is_some()
        || UNDECODED.contains(&name)
        || name.starts_with("bits")
        || (name.len() == 4 && (name.starts_with("int") || name.starts_with("uint")))
        || (name.len() == 5 && name.starts_with("uint"))
}

/// Modules whose every global runs code or touches the system when called.
const DANGEROUS_MODULES: &[&str] = &[
    "os",
    "posix",
    "nt",
    "subprocess",
    "runpy",
    "sys",
    "shutil",
    "socket",
    "pty",
    "commands",
    "webbrowser",
    "importlib",
    "ctypes",
    "code",
    "codeop",
    "pdb",
    "timeit",
    "marshal",
    "pickle",
    "_pickle",
    "multiprocessing",
    "asyncio",
    "platform",
];

/// Builtins that evaluate, import, open or reach attributes.
const DANGEROUS_BUILTINS: &[&str] = &[
    "eval",
    "exec",
    "execfile",
    "compile",
    "open",
    "getattr",
    "setattr",
    "delattr",
    "__import__",
    "globals",
    "locals",
    "vars",
    "input",
    "breakpoint",
    "memoryview",
];

/// How risky the global `dotted` (module and name joined by `.`) is.
pub(crate) fn risk(dotted: &str) -> Risk {
    let (module, name) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let top = module.split('.').next().unwrap_or(module);
    let dangerous = DANGEROUS_MODULES.contains(&top)
        || (matches!(module, "builtins" | "__builtin__") && DANGEROUS_BUILTINS.contains(&name))
        || matches!(
            (module, name),
            ("operator", "attrgetter" | "methodcaller" | "itemgetter")
                | ("functools", "partial" | "reduce")
                | ("torch", "load" | "hub")
                | ("numpy", "load")
        );
    if dangerous {
        Risk::Dangerous
    } else {
        Risk::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_globals_are_recognised_by_module_and_builtin() {
        for g in [
            "posix.system",
            "os.system",
            "nt.system",
            "subprocess.Popen",
            "builtins.eval",
            "builtins.getattr",
            "__builtin__.exec",
            "runpy._run_code",
            "os.path.join",
        ] {
            assert_eq!(risk(g), Risk::Dangerous, "{g}");
        }
        for g in [
            "__main__.HParams",
            "numpy.core.multiarray._reconstruct",
            "builtins.set",
        ] {
            assert_eq!(risk(g), Risk::Unknown, "{g}");
        }
    }

    #[test]
    fn storages_and_dtypes_map_to_their_element_types() {
        assert_eq!(
            Global::classify("torch", "BFloat16Storage"),
            Global::TypedStorage(Some(Dtype::BF16))
        );
        assert_eq!(
            Global::classify("torch", "float8_e5m2"),
            Global::Dtype(Some(Dtype::F8E5M2))
        );
        assert_eq!(Global::classify("torch", "complex128"), Global::Dtype(None));
        assert_eq!(
            Global::classify("torch.storage", "UntypedStorage"),
            Global::UntypedStorage
        );
        assert_eq!(
            Global::classify("torch", "load"),
            Global::Other("torch.load".into())
        );
    }
}
