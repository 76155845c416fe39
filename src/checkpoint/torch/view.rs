//! Tensor views over a storage: which storage elements a tensor's logical (row-major)
//! elements are, for tensors that are not one contiguous run of stored bytes.

/// How a tensor that is not a contiguous run of a stored entry reaches its storage.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Strides in elements, one per dimension of the tensor's shape.
    pub(crate) strides: Box<[u64]>,
    /// The deflated entry holding the storage (index into the file's inflated entries);
    /// `None` when the storage is stored and read in place.
    pub(crate) inflated: Option<usize>,
}

/// Row-major strides of `shape`.
pub(crate) fn contiguous_strides(shape: &[u64]) -> Vec<u64> {
    let mut strides = vec![1u64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1].saturating_mul(shape[i + 1]);
    }
    strides
}

/// Whether `strides` lay `shape` out row-major without gaps (dimensions of size 1 may have
/// any stride, as in torch).
pub(crate) fn is_contiguous(shape: &[u64], strides: &[u64]) -> bool {
    if shape.contains(&0) {
        return true;
    }
    let mut expected = 1u64;
    for (&n, &s) in shape.iter().zip(strides).rev() {
        if n != 1 {
            if s != expected {
                return false;
            }
            expected = expected.saturating_mul(n);
        }
    }
    true
}

/// One past the largest storage element the view reaches, counted from its first element
/// (0 for an empty tensor), or `None` on overflow.
pub(crate) fn extent(shape: &[u64], strides: &[u64]) -> Option<u64> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().zip(strides).try_fold(1u64, |acc, (&n, &s)| {
        acc.checked_add((n - 1).checked_mul(s)?)
    })
}

/// Storage element offsets (from the view's first element) of logical elements
/// `first..first + count`, in row-major order.
pub(crate) fn element_offsets(shape: &[u64], strides: &[u64], first: u64, count: u64) -> Vec<u64> {
    let mut out = Vec::with_capacity(count as usize);
    if count == 0 {
        return out;
    }
    // The multi-index of `first`, then an odometer.
    let mut index = vec![0u64; shape.len()];
    let mut rest = first;
    for d in (0..shape.len()).rev() {
        index[d] = rest % shape[d];
        rest /= shape[d];
    }
    let mut at: u64 = index.iter().zip(strides).map(|(&i, &s)| i * s).sum();
    for _ in 0..count {
        out.push(at);
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            at += strides[d];
            if index[d] < shape[d] {
                break;
            }
            at -= strides[d] * shape[d];
            index[d] = 0;
        }
    }
    out
}

/// Copies the elements at `offsets` (relative to `min`, the smallest of them) out of
/// `span`, the storage bytes from element `min` on, `width` bytes each.
pub(crate) fn gather(span: &[u8], offsets: &[u64], min: u64, width: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(offsets.len() * width);
    for &o in offsets {
        let at = (o - min) as usize * width;
        out.extend_from_slice(&span[at..at + width]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transposed_matrix_reads_column_by_column() {
        // A 2×3 storage 0..6 viewed as its 3×2 transpose: strides (1, 3).
        let offsets = element_offsets(&[3, 2], &[1, 3], 0, 6);
        assert_eq!(offsets, [0, 3, 1, 4, 2, 5]);
        assert_eq!(element_offsets(&[3, 2], &[1, 3], 3, 2), [4, 2]);
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
        assert_eq!(extent(&[3, 2], &[1, 3]), Some(6));
    }

    #[test]
    fn size_one_dimensions_do_not_break_contiguity() {
        assert!(is_contiguous(&[4, 1, 3], &[3, 99, 1]));
        assert!(is_contiguous(&[], &[]));
        assert_eq!(contiguous_strides(&[2, 3, 4]), [12, 4, 1]);
        assert_eq!(extent(&[2, 0], &[1, 1]), Some(0));
    }
}
