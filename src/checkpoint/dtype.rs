//! Element types of the safetensors format and their decoding to `f64`.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An element type named in a safetensors header.
///
/// Every dtype of the format is recognised so that a checkpoint using one we cannot decode
/// (sub-byte floats, complex) still opens and lists; [`Dtype::is_decodable`] tells which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// `BOOL`, one byte, 0 or 1.
    Bool,
    /// `U8`.
    U8,
    /// `I8`.
    I8,
    /// `U16`.
    U16,
    /// `I16`.
    I16,
    /// `U32`.
    U32,
    /// `I32`.
    I32,
    /// `U64`.
    U64,
    /// `I64`.
    I64,
    /// `F16`, IEEE half precision.
    F16,
    /// `BF16`, bfloat16.
    BF16,
    /// `F32`.
    F32,
    /// `F64`.
    F64,
    /// `F8_E4M3`, the OCP "fn" variant: no infinities, one NaN pattern per sign.
    F8E4M3,
    /// `F8_E5M2`, IEEE-like with infinities.
    F8E5M2,
    /// `F8_E4M3FNUZ`: bias 8, no infinities, no negative zero, `0x80` is NaN.
    F8E4M3Fnuz,
    /// `F8_E5M2FNUZ`: bias 16, no infinities, no negative zero, `0x80` is NaN.
    F8E5M2Fnuz,
    /// `F8_E8M0`, an exponent-only scale type (MX formats).
    F8E8M0,
    /// `F6_E2M3`, 6-bit float (not decoded).
    F6E2M3,
    /// `F6_E3M2`, 6-bit float (not decoded).
    F6E3M2,
    /// `F4`, 4-bit float (not decoded).
    F4,
    /// `C64`, complex of two f32 (not decoded: it has no single real value).
    C64,
}

/// A dtype string that is not part of the safetensors format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDtype(pub String);

impl fmt::Display for UnknownDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown dtype {:?}", self.0)
    }
}

impl Dtype {
    /// Every dtype, in the order of the safetensors specification.
    pub const ALL: [Dtype; 22] = [
        Dtype::Bool,
        Dtype::U8,
        Dtype::I8,
        Dtype::U16,
        Dtype::I16,
        Dtype::U32,
        Dtype::I32,
        Dtype::U64,
        Dtype::I64,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F32,
        Dtype::F64,
        Dtype::F8E4M3,
        Dtype::F8E5M2,
        Dtype::F8E4M3Fnuz,
        Dtype::F8E5M2Fnuz,
        Dtype::F8E8M0,
        Dtype::F6E2M3,
        Dtype::F6E3M2,
        Dtype::F4,
        Dtype::C64,
    ];

    /// The name used in safetensors headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::Bool => "BOOL",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::U16 => "U16",
            Dtype::I16 => "I16",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::U64 => "U64",
            Dtype::I64 => "I64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::F8E4M3 => "F8_E4M3",
            Dtype::F8E5M2 => "F8_E5M2",
            Dtype::F8E4M3Fnuz => "F8_E4M3FNUZ",
            Dtype::F8E5M2Fnuz => "F8_E5M2FNUZ",
            Dtype::F8E8M0 => "F8_E8M0",
            Dtype::F6E2M3 => "F6_E2M3",
            Dtype::F6E3M2 => "F6_E3M2",
            Dtype::F4 => "F4",
            Dtype::C64 => "C64",
        }
    }

    /// Storage size of one element in bits.
    pub fn bits(self) -> u64 {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8E4M3
            | Dtype::F8E5M2
            | Dtype::F8E4M3Fnuz
            | Dtype::F8E5M2Fnuz
            | Dtype::F8E8M0 => 8,
            Dtype::U16 | Dtype::I16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::U32 | Dtype::I32 | Dtype::F32 => 32,
            Dtype::U64 | Dtype::I64 | Dtype::F64 | Dtype::C64 => 64,
        }
    }

    /// Whether the values can be decoded to `f64` (false for sub-byte floats and complex).
    pub fn is_decodable(self) -> bool {
        !matches!(self, Dtype::F4 | Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::C64)
    }

    /// Whether this is an integer type (booleans included), as a BatchNorm counter must be.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            Dtype::Bool
                | Dtype::U8
                | Dtype::I8
                | Dtype::U16
                | Dtype::I16
                | Dtype::U32
                | Dtype::I32
                | Dtype::U64
                | Dtype::I64
        )
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        !self.is_integer() && self != Dtype::C64
    }

    /// Byte length of `elements` values, or `None` on overflow or a partial trailing byte
    /// count that the format cannot represent.
    pub fn byte_len(self, elements: u64) -> Option<u64> {
        let bits = elements.checked_mul(self.bits())?;
        Some(bits.div_ceil(8))
    }

    /// Decodes little-endian `bytes` of this dtype, appending one `f64` per element to `out`.
    ///
    /// Returns `false` (and appends nothing) when the dtype is not decodable.
    /// Integers wider than 53 bits round to the nearest `f64`, as `numpy.astype(float64)` does.
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<f64>) -> bool {
        fn each<const N: usize>(bytes: &[u8], out: &mut Vec<f64>, f: impl Fn([u8; N]) -> f64) {
            out.extend(
                bytes
                    .chunks_exact(N)
                    .map(|c| f(c.try_into().expect("chunk of N bytes"))),
            );
        }
        out.reserve(bytes.len() * 8 / self.bits().max(1) as usize);
        match self {
            Dtype::Bool | Dtype::U8 => out.extend(bytes.iter().map(|&b| f64::from(b))),
            Dtype::I8 => out.extend(bytes.iter().map(|&b| f64::from(b as i8))),
            Dtype::U16 => each(bytes, out, |b| f64::from(u16::from_le_bytes(b))),
            Dtype::I16 => each(bytes, out, |b| f64::from(i16::from_le_bytes(b))),
            Dtype::U32 => each(bytes, out, |b| f64::from(u32::from_le_bytes(b))),
            Dtype::I32 => each(bytes, out, |b| f64::from(i32::from_le_bytes(b))),
            Dtype::U64 => each(bytes, out, |b| u64::from_le_bytes(b) as f64),
            Dtype::I64 => each(bytes, out, |b| i64::from_le_bytes(b) as f64),
            Dtype::F16 => each(bytes, out, |b| half::f16::from_le_bytes(b).to_f64()),
            Dtype::BF16 => each(bytes, out, |b| half::bf16::from_le_bytes(b).to_f64()),
            Dtype::F32 => each(bytes, out, |b| f64::from(f32::from_le_bytes(b))),
            Dtype::F64 => each(bytes, out, f64::from_le_bytes),
            Dtype::F8E4M3 => out.extend(bytes.iter().map(|&b| f8_e4m3fn_to_f64(b))),
            Dtype::F8E5M2 => out.extend(bytes.iter().map(|&b| f8_e5m2_to_f64(b))),
            Dtype::F8E4M3Fnuz => out.extend(bytes.iter().map(|&b| f8_fnuz_to_f64(b, 3, 8))),
            Dtype::F8E5M2Fnuz => out.extend(bytes.iter().map(|&b| f8_fnuz_to_f64(b, 2, 16))),
            Dtype::F8E8M0 => out.extend(bytes.iter().map(|&b| f8_e8m0_to_f64(b))),
            Dtype::F6E2M3 | Dtype::F6E3M2 | Dtype::F4 | Dtype::C64 => return false,
        }
        true
    }

    /// Decodes `bytes` into a new vector, or `None` when the dtype is not decodable.
    pub fn decode(self, bytes: &[u8]) -> Option<Vec<f64>> {
        let mut out = Vec::new();
        self.decode_into(bytes, &mut out).then_some(out)
    }

    /// Unit roundoff (half the machine epsilon) of a float dtype: the largest relative error
    /// of one rounding to it. `0` for integers, which hold their values exactly.
    pub fn unit_roundoff(self) -> f64 {
        let mantissa_bits = match self {
            Dtype::F64 => 52,
            Dtype::F32 | Dtype::C64 => 23,
            Dtype::F16 => 10,
            Dtype::BF16 => 7,
            Dtype::F8E4M3 | Dtype::F8E4M3Fnuz | Dtype::F6E2M3 => 3,
            Dtype::F8E5M2 | Dtype::F8E5M2Fnuz | Dtype::F6E3M2 => 2,
            Dtype::F4 => 1,
            // A power of two: relative error up to a factor of two.
            Dtype::F8E8M0 => 0,
            _ => return 0.0,
        };
        2f64.powi(-(mantissa_bits + 1))
    }

    /// Rounds `value` to the nearest value representable in this float dtype (round half to
    /// even, as a cast does). Integer dtypes and undecodable ones return `value` unchanged.
    pub fn round_f64(self, value: f64) -> f64 {
        match self {
            Dtype::F16 => half::f16::from_f64(value).to_f64(),
            Dtype::BF16 => half::bf16::from_f64(value).to_f64(),
            Dtype::F32 => f64::from(value as f32),
            _ => value,
        }
    }
}

/// A value that cannot be cast to another dtype without changing it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CastError {
    /// No conversion between these dtypes (sub-byte floats, FP8 targets, complex).
    #[error("cannot convert {from} values to {to}")]
    Unsupported {
        /// The source dtype.
        from: Dtype,
        /// The target dtype.
        to: Dtype,
    },
    /// A value outside the target's range, or a fraction or NaN for an integer target.
    #[error("value {value} does not fit {to}")]
    DoesNotFit {
        /// The value, as written by Rust.
        value: String,
        /// The target dtype.
        to: Dtype,
    },
}

impl Dtype {
    /// Whether [`Dtype::cast_into`] can convert this dtype's values to `to`.
    pub fn can_cast(self, to: Dtype) -> bool {
        let encodable = |d: Dtype| {
            d.is_integer() || matches!(d, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64)
        };
        self == to || (self.is_decodable() && self.bits().is_multiple_of(8) && encodable(to))
    }

    /// Converts little-endian `bytes` of this dtype to `to`, appending to `out`, the way
    /// `tensor.to(dtype)` does where that changes no value: floats round to the nearest
    /// value of `to` (half to even, [`Dtype::round_f64`], the rule `diff` compares casts
    /// with), integers convert exactly. An integer target refuses fractions, NaN and values
    /// out of range rather than wrap them.
    pub fn cast_into(self, bytes: &[u8], to: Dtype, out: &mut Vec<u8>) -> Result<(), CastError> {
        if self == to {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        if !self.can_cast(to) {
            return Err(CastError::Unsupported { from: self, to });
        }
        let width = (self.bits() / 8) as usize;
        out.reserve(bytes.len() / width * (to.bits() / 8) as usize);
        for chunk in bytes.chunks_exact(width) {
            let value = match self.int_value(chunk) {
                Some(i) => Value::Int(i),
                None => {
                    let mut v = Vec::with_capacity(1);
                    self.decode_into(chunk, &mut v);
                    Value::Float(v[0])
                }
            };
            to.encode(value, out)?;
        }
        Ok(())
    }

    /// The exact value of one integer element, `None` for other dtypes.
    fn int_value(self, b: &[u8]) -> Option<i128> {
        let mut le = [0u8; 8];
        le[..b.len()].copy_from_slice(b);
        let unsigned = u64::from_le_bytes(le);
        let signed = |bits: u32| {
            let shift = 64 - bits;
            i128::from(((unsigned << shift) as i64) >> shift)
        };
        Some(match self {
            Dtype::Bool | Dtype::U8 | Dtype::U16 | Dtype::U32 | Dtype::U64 => i128::from(unsigned),
            Dtype::I8 => signed(8),
            Dtype::I16 => signed(16),
            Dtype::I32 => signed(32),
            Dtype::I64 => signed(64),
            _ => return None,
        })
    }

    /// Appends one value in this (encodable) dtype.
    fn encode(self, value: Value, out: &mut Vec<u8>) -> Result<(), CastError> {
        let float = match value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        };
        if self.is_integer() {
            let does_not_fit = || CastError::DoesNotFit {
                value: match value {
                    Value::Int(i) => i.to_string(),
                    Value::Float(f) => f.to_string(),
                },
                to: self,
            };
            let int = match value {
                Value::Int(i) => i,
                // Every integral f64 below 2^127 converts exactly.
                Value::Float(f) if f.fract() == 0.0 && f.abs() < 2f64.powi(127) => f as i128,
                Value::Float(_) => return Err(does_not_fit()),
            };
            let (min, max): (i128, i128) = match self {
                Dtype::Bool => (0, 1),
                Dtype::U8 => (0, u8::MAX.into()),
                Dtype::I8 => (i8::MIN.into(), i8::MAX.into()),
                Dtype::U16 => (0, u16::MAX.into()),
                Dtype::I16 => (i16::MIN.into(), i16::MAX.into()),
                Dtype::U32 => (0, u32::MAX.into()),
                Dtype::I32 => (i32::MIN.into(), i32::MAX.into()),
                Dtype::U64 => (0, u64::MAX.into()),
                _ => (i64::MIN.into(), i64::MAX.into()),
            };
            if !(min..=max).contains(&int) {
                return Err(does_not_fit());
            }
            let bytes = (int as u64).to_le_bytes();
            out.extend_from_slice(&bytes[..(self.bits() / 8) as usize]);
            return Ok(());
        }
        match self {
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(float).to_le_bytes()),
            Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f64(float).to_le_bytes()),
            Dtype::F32 => out.extend_from_slice(&(float as f32).to_le_bytes()),
            _ => out.extend_from_slice(&float.to_le_bytes()),
        }
        Ok(())
    }
}

/// One element on its way from one dtype to another: integers stay exact.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(i128),
    Float(f64),
}

/// OCP FP8 E4M3 "fn": bias 7, no infinities, S.1111.111 is NaN.
fn f8_e4m3fn_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0x0f);
    let man = f64::from(b & 0x07);
    if exp == 0x0f && b & 0x07 == 0x07 {
        return f64::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f64.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f64.powi(exp - 7)
    }
}

/// FP8 E5M2: bias 15, IEEE semantics (infinities and NaNs at exponent 31).
fn f8_e5m2_to_f64(b: u8) -> f64 {
    // E5M2 is the top byte of an IEEE half.
    half::f16::from_bits(u16::from(b) << 8).to_f64()
}

/// The "fnuz" FP8 variants (AMD/Graphcore): `mantissa_bits` of mantissa, exponent `bias`,
/// no infinities, and the negative-zero pattern `0x80` is the only NaN.
fn f8_fnuz_to_f64(b: u8, mantissa_bits: u32, bias: i32) -> f64 {
    if b == 0x80 {
        return f64::NAN;
    }
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let man_mask = (1u8 << mantissa_bits) - 1;
    let exp = i32::from((b & 0x7f) >> mantissa_bits);
    let frac = f64::from(b & man_mask) / f64::from(1u32 << mantissa_bits);
    if exp == 0 {
        sign * frac * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + frac) * 2f64.powi(exp - bias)
    }
}

/// FP8 E8M0: an unsigned power of two 2^(b-127); 0xFF is NaN.
fn f8_e8m0_to_f64(b: u8) -> f64 {
    if b == 0xff {
        f64::NAN
    } else {
        2f64.powi(i32::from(b) - 127)
    }
}

impl FromStr for Dtype {
    type Err = UnknownDtype;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dtype::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDtype(s.to_owned()))
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Dtype {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(d.as_str().parse::<Dtype>(), Ok(d));
        }
        assert_eq!(
            "F128".parse::<Dtype>(),
            Err(UnknownDtype("F128".to_owned()))
        );
    }

    #[test]
    fn fp8_special_values() {
        // Values from the OCP 8-bit floating point specification, table 2.
        assert_eq!(f8_e4m3fn_to_f64(0x7e), 448.0);
        assert_eq!(f8_e4m3fn_to_f64(0x01), 2f64.powi(-9));
        assert!(f8_e4m3fn_to_f64(0x7f).is_nan());
        assert!(f8_e4m3fn_to_f64(0xff).is_nan());
        assert_eq!(f8_e5m2_to_f64(0x7b), 57344.0);
        assert_eq!(f8_e5m2_to_f64(0x7c), f64::INFINITY);
        assert_eq!(f8_e5m2_to_f64(0xfc), f64::NEG_INFINITY);
        assert!(f8_e5m2_to_f64(0x7d).is_nan());
        assert_eq!(f8_e8m0_to_f64(127), 1.0);
        // fnuz: max normal 240 (E4M3) and 57344 (E5M2), 0x80 is NaN, 0x00 is zero.
        assert_eq!(f8_fnuz_to_f64(0x7f, 3, 8), 240.0);
        assert_eq!(f8_fnuz_to_f64(0x7f, 2, 16), 57344.0);
        assert!(f8_fnuz_to_f64(0x80, 3, 8).is_nan());
        assert_eq!(f8_fnuz_to_f64(0x01, 3, 8), 2f64.powi(-10));
        assert!(f8_e8m0_to_f64(255).is_nan());
    }

    #[test]
    fn byte_lengths() {
        assert_eq!(Dtype::F4.byte_len(3), Some(2));
        assert_eq!(Dtype::F32.byte_len(3), Some(12));
        assert_eq!(Dtype::F64.byte_len(u64::MAX), None);
    }

    #[test]
    fn casts_round_like_torch_and_keep_integers_exact() {
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let mut out = Vec::new();
        // 1 + 2^-11 is halfway between two halves: ties to even, as torch's .half() does.
        let halfway = 1.0 + 2f32.powi(-11);
        Dtype::F32
            .cast_into(&f32s(&[halfway, 0.1, -3.0]), Dtype::F16, &mut out)
            .unwrap();
        let halves: Vec<u16> = out
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(halves, [0x3c00, 0x2e66, 0xc200]);
        let mut out = Vec::new();
        let big = (1i64 << 60) + 1;
        Dtype::I64
            .cast_into(&big.to_le_bytes(), Dtype::U64, &mut out)
            .unwrap();
        assert_eq!(out, (big as u64).to_le_bytes());
        let mut out = Vec::new();
        assert!(matches!(
            Dtype::I64.cast_into(&300i64.to_le_bytes(), Dtype::U8, &mut out),
            Err(CastError::DoesNotFit { .. })
        ));
        assert!(matches!(
            Dtype::F32.cast_into(&f32s(&[0.5]), Dtype::I64, &mut out),
            Err(CastError::DoesNotFit { .. })
        ));
        assert!(!Dtype::F32.can_cast(Dtype::F8E4M3));
        assert!(Dtype::F8E4M3.can_cast(Dtype::F32));
    }
}
