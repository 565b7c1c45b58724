//! The matrix product under the frozen linear layers, which is nearly all of a step's and an evaluation's
//! time on the CPU.
//!
//! On x86-64 with AVX2 and FMA it runs faer's assembly kernels (`private-gemm-x86`, already in the build
//! through faer): with the output row-major they read the activations in place and pack only the weight
//! (5-10 % of a default round's samples under `perf`, against 11 % packing in the `gemm` crate that burn
//! uses; the frozen weight is repacked on every call either way). Measured interleaved on the default round
//! (Zen 4, 2 threads): training 4.01-4.07 s against 4.21-4.27 s on the `gemm` crate, evaluation 1.84 s
//! against 1.87-1.99 s, and a lone step faster on all four shapes of the step bench (0.117 vs 0.134 s on
//! MiniLM). Elsewhere the `gemm` crate runs it.
//!
//! Threads: those kernels run a multi-threaded product on a pool of their own (beside rayon's, which the
//! clients already fill) and plan its blocking from the thread count, so nothing promises one thread's bits.
//! Each call here is therefore single-threaded, and a large product is cut into blocks of output columns
//! whose width depends on the shape alone (of rows, when it has too few columns); rayon spreads the blocks.
//! A column block reads all of the activations and its own columns of the weight, so cutting adds no
//! packing, and the result is the same for any thread count (tested).

use rayon::prelude::*;

/// Products smaller than this many multiply-adds stay one call on one thread (burn-flex's own threshold).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// Output columns per block of a large product: twice the AVX-512 kernel's 96-row tile (the kernels work
/// on the transposed problem, so our columns are their rows). On the default round 96 measured the same,
/// 384 and one block per product 2-3 % slower in training, even with every core busy with its own client.
const BLOCK_COLUMNS: usize = 192;

/// Rows per block of a large product with at most [`BLOCK_COLUMNS`] columns (small models' layers), which
/// is cut by rows instead; each block packs the (small) weight again.
const BLOCK_ROWS: usize = 256;

/// A 2-D view of f32 storage: element (i, j) is `data[i·row_stride + j·col_stride]`, strides non-negative.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View<'_> {
    /// The view with rows and columns swapped (no data moves).
    pub fn transposed(self) -> Self {
        View { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Panics unless every element of the view lies inside `data`: the kernels read through raw pointers.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "a matrix view reaches past its storage");
        }
    }

    /// The view of rows `start..start + count`.
    fn rows(self, start: usize, count: usize) -> Self {
        let offset = if count == 0 { 0 } else { start * self.row_stride };
        View { data: &self.data[offset.min(self.data.len())..], rows: count, ..self }
    }

    /// The view of columns `start..start + width`.
    fn columns(self, start: usize, width: usize) -> Self {
        let offset = if width == 0 { 0 } else { start * self.col_stride };
        View { data: &self.data[offset.min(self.data.len())..], cols: width, ..self }
    }
}

/// `out = lhs·rhs`, or `out += lhs·rhs` when `accumulate`; `out` is row-major `[lhs.rows, rhs.cols]`.
pub fn multiply_into(out: &mut [f32], accumulate: bool, lhs: View<'_>, rhs: View<'_>) {
    multiply_with(Kernel::detect(), out, accumulate, lhs, rhs);
}

/// `out = lhs·rhs` on the calling thread, into rows `out_row_stride` apart (the columns between are left
/// alone): for the many small products of attention heads, which their callers already spread over threads.
pub fn multiply_single(out: &mut [f32], out_row_stride: usize, lhs: View<'_>, rhs: View<'_>) {
    multiply_single_with(Kernel::detect(), out, out_row_stride, lhs, rhs);
}

fn multiply_single_with(kernel: Kernel, out: &mut [f32], out_row_stride: usize, lhs: View<'_>, rhs: View<'_>) {
    if settle(out, out_row_stride, false, lhs, rhs) {
        // SAFETY: `out` holds m rows of n elements at that stride and both views lie inside their slices
        // (checked by `settle`).
        unsafe { kernel.run(out.as_mut_ptr(), out_row_stride, false, lhs, rhs) };
    }
}

/// Checks a product's operands and its output (rows `stride` apart) and settles what needs no kernel: an
/// empty output, or an empty inner dimension (faer's kernels would leave a replaced output as it was).
/// Returns whether a kernel still has to run.
fn settle(out: &mut [f32], stride: usize, accumulate: bool, lhs: View<'_>, rhs: View<'_>) -> bool {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions of a product");
    lhs.check();
    rhs.check();
    if m == 0 || n == 0 {
        return false;
    }
    assert!(stride >= n && (m - 1) * stride + n <= out.len(), "product output size");
    if k == 0 {
        if !accumulate {
            out.chunks_mut(stride).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return false;
    }
    true
}

fn multiply_with(kernel: Kernel, out: &mut [f32], accumulate: bool, lhs: View<'_>, rhs: View<'_>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(out.len(), m * n, "product output size");
    if !settle(out, n, accumulate, lhs, rhs) {
        return;
    }
    if m.saturating_mul(n).saturating_mul(k) < PARALLEL_WORK || (n <= BLOCK_COLUMNS && m <= BLOCK_ROWS) {
        // SAFETY: `out` is m·n row-major elements and both views were checked to lie inside their slices.
        unsafe { kernel.run(out.as_mut_ptr(), n, accumulate, lhs, rhs) };
        return;
    }
    if n <= BLOCK_COLUMNS {
        // Too few columns to share out: blocks of whole rows instead, each with its rows of the output.
        out.par_chunks_mut(BLOCK_ROWS * n).enumerate().for_each(|(block, out)| {
            let rows = lhs.rows(block * BLOCK_ROWS, out.len() / n);
            // SAFETY: `out` is this block's rows of the output; the row view lies inside the checked one.
            unsafe { kernel.run(out.as_mut_ptr(), n, accumulate, rows, rhs) };
        });
        return;
    }
    let out = SharedOut(out.as_mut_ptr());
    (0..n.div_ceil(BLOCK_COLUMNS)).into_par_iter().for_each(|block| {
        let start = block * BLOCK_COLUMNS;
        let width = BLOCK_COLUMNS.min(n - start);
        // SAFETY: blocks write disjoint column ranges of the m·n output (row stride n); the column view of
        // `rhs` lies inside the checked one.
        unsafe { kernel.run(out.at(start), n, accumulate, lhs, rhs.columns(start, width)) };
    });
}

/// The output's base pointer, shared by blocks that write disjoint columns.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every block writes only its own columns, so no element is written by two threads.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, column: usize) -> *mut f32 {
        self.0.wrapping_add(column)
    }
}

/// Which kernels this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    #[cfg(target_arch = "x86_64")]
    Faer(private_gemm_x86::InstrSet),
    Gemm,
}

impl Kernel {
    /// The best kernel this CPU runs, looked up once.
    fn detect() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Kernel::available()[0])
    }

    /// Every kernel this CPU can run, best first (the tests run each).
    fn available() -> Vec<Self> {
        #[cfg(target_arch = "x86_64")]
        {
            use private_gemm_x86::InstrSet;
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            let faer = [(avx512, InstrSet::Avx512), (avx2, InstrSet::Avx256)];
            let faer = faer.into_iter().filter(|(has, _)| *has).map(|(_, instr)| Kernel::Faer(instr));
            faer.chain([Kernel::Gemm]).collect()
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![Kernel::Gemm]
    }

    /// One single-threaded product into `out`, row-major with row stride `out_row_stride`.
    ///
    /// # Safety
    /// `out` must address `lhs.rows` rows of `rhs.cols` writable elements at that row stride, not aliasing
    /// either view, and both views must lie inside their slices; `Faer` needs the CPU features it names.
    unsafe fn run(self, out: *mut f32, out_row_stride: usize, accumulate: bool, lhs: View<'_>, rhs: View<'_>) {
        let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
        let stride = |s: usize| s as isize;
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Faer(instr) => {
                use private_gemm_x86::{Accum, DType, DstKind, IType, gemm};
                let alpha = 1.0f32;
                // SAFETY: the caller's contract; the index and diagonal pointers are null, which these
                // kernels take as "none" (a full output, no scaling diagonal).
                unsafe {
                    gemm(
                        DType::F32,
                        IType::U64,
                        instr,
                        m,
                        n,
                        k,
                        out.cast(),
                        stride(out_row_stride),
                        1,
                        std::ptr::null(),
                        std::ptr::null(),
                        DstKind::Full,
                        if accumulate { Accum::Add } else { Accum::Replace },
                        lhs.data.as_ptr().cast(),
                        stride(lhs.row_stride),
                        stride(lhs.col_stride),
                        false,
                        std::ptr::null(),
                        0,
                        rhs.data.as_ptr().cast(),
                        stride(rhs.row_stride),
                        stride(rhs.col_stride),
                        false,
                        (&raw const alpha).cast(),
                        1,
                    )
                }
            }
            // SAFETY: the caller's contract.
            Kernel::Gemm => unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out,
                    1,
                    stride(out_row_stride),
                    accumulate,
                    lhs.data.as_ptr(),
                    stride(lhs.col_stride),
                    stride(lhs.row_stride),
                    rhs.data.as_ptr(),
                    stride(rhs.col_stride),
                    stride(rhs.row_stride),
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::in_pool;
    use proptest::prelude::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.043).collect()
    }

    /// The product in f64, element by element, as the reference.
    fn reference(lhs: View<'_>, rhs: View<'_>) -> Vec<f64> {
        let at = |v: View<'_>, i: usize, j: usize| f64::from(v.data[i * v.row_stride + j * v.col_stride]);
        let mut out = Vec::with_capacity(lhs.rows * rhs.cols);
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                out.push((0..lhs.cols).map(|p| at(lhs, i, p) * at(rhs, p, j)).sum());
            }
        }
        out
    }

    fn assert_close(ours: &[f32], reference: &[f64], what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: length");
        for (i, (a, b)) in ours.iter().zip(reference).enumerate() {
            assert!((f64::from(*a) - b).abs() <= 1e-4 * (1.0 + b.abs()), "{what}: element {i}: {a} vs {b}");
        }
    }

    /// What `multiply_with` must leave in an output that held `start`.
    fn expected(lhs: View<'_>, rhs: View<'_>, start: &[f32], accumulate: bool) -> Vec<f64> {
        let mut expected = reference(lhs, rhs);
        if accumulate {
            expected.iter_mut().zip(start).for_each(|(e, s)| *e += f64::from(*s));
        }
        expected
    }

    /// For every kernel: the product matches the reference, with the same bits on 1, 2 and 5 threads.
    fn assert_exact_for_any_thread_count(lhs: View<'_>, rhs: View<'_>, start: &[f32], accumulate: bool, what: &str) {
        let expected = expected(lhs, rhs, start, accumulate);
        for kernel in Kernel::available() {
            let run = || {
                let mut out = start.to_vec();
                multiply_with(kernel, &mut out, accumulate, lhs, rhs);
                out
            };
            let one = in_pool(1, run);
            assert_close(&one, &expected, &format!("{kernel:?}, {what}"));
            assert_eq!(one, in_pool(2, run), "{kernel:?}, {what}");
            assert_eq!(one, in_pool(5, run), "{kernel:?}, {what}");
        }
    }

    /// Row-major `[rows, cols]`, or the transposed view of a row-major `[cols, rows]` (as checkpoints
    /// store weights).
    fn view(data: &[f32], rows: usize, cols: usize, transposed: bool) -> View<'_> {
        if transposed {
            View { data, rows, cols, row_stride: 1, col_stride: rows }
        } else {
            View { data, rows, cols, row_stride: cols, col_stride: 1 }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Any shape, either layout of either operand, replacing or accumulating, large enough or not to be
        /// cut into column blocks: the product is the f64 product within f32 rounding.
        #[test]
        fn products_match_the_reference(
            m in 1usize..80, k in 0usize..260, n in 1usize..520,
            lhs_t: bool, rhs_t: bool, accumulate: bool,
        ) {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let (lhs, rhs) = (view(&a, m, k, lhs_t), view(&b, k, n, rhs_t));
            let start = values(m * n, 3);
            let expected = expected(lhs, rhs, &start, accumulate);
            for kernel in Kernel::available() {
                let mut out = start.clone();
                multiply_with(kernel, &mut out, accumulate, lhs, rhs);
                assert_close(&out, &expected, &format!("{kernel:?}"));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// The small products of attention heads: any shape, either layout, output rows further apart than
        /// the product is wide (a head's columns of a wider matrix): the product within f32 rounding, the
        /// columns between rows left as they were.
        #[test]
        fn single_products_into_spaced_rows_match_the_reference(
            m in 1usize..40, k in 0usize..90, n in 1usize..70, gap in 0usize..9, lhs_t: bool, rhs_t: bool,
        ) {
            let (a, b) = (values(m * k, 11), values(k * n, 12));
            let (lhs, rhs) = (view(&a, m, k, lhs_t), view(&b, k, n, rhs_t));
            let stride = n + gap;
            let expected = reference(lhs, rhs);
            for kernel in Kernel::available() {
                let mut out = vec![f32::NAN; (m - 1) * stride + n];
                multiply_single_with(kernel, &mut out, stride, lhs, rhs);
                let rows: Vec<f32> = (0..m).flat_map(|i| out[i * stride..i * stride + n].to_vec()).collect();
                assert_close(&rows, &expected, &format!("{kernel:?}"));
                let between = (0..m - 1).flat_map(|i| out[i * stride + n..(i + 1) * stride].to_vec());
                prop_assert!(between.into_iter().all(f32::is_nan), "{kernel:?} wrote between rows");
            }
        }
    }

    #[test]
    fn column_blocks_give_the_same_bits_for_any_thread_count() {
        let (m, k, n) = (70, 260, 3 * BLOCK_COLUMNS + 17);
        assert!(m * k * n >= PARALLEL_WORK);
        let (a, b) = (values(m * k, 4), values(k * n, 5));
        let (lhs, rhs) = (view(&a, m, k, false), view(&b, k, n, true));
        assert_exact_for_any_thread_count(lhs, rhs, &vec![0.0; m * n], false, "column blocks");
    }

    #[test]
    fn row_blocks_of_a_narrow_product_give_the_same_bits_for_any_thread_count() {
        let (m, k, n) = (3 * BLOCK_ROWS + 5, 200, BLOCK_COLUMNS - 64);
        assert!(m * k * n >= PARALLEL_WORK);
        let (a, b) = (values(m * k, 7), values(k * n, 8));
        let (lhs, rhs) = (view(&a, m, k, true), view(&b, k, n, true));
        assert_exact_for_any_thread_count(lhs, rhs, &values(m * n, 9), true, "row blocks");
    }

    #[test]
    fn an_empty_inner_dimension_replaces_with_zeros_and_adds_nothing() {
        let (m, n) = (5, 7);
        let start = values(m * n, 10);
        let (lhs, rhs) = (view(&[], m, 0, false), view(&[], 0, n, false));
        for kernel in Kernel::available() {
            let mut replaced = start.clone();
            multiply_with(kernel, &mut replaced, false, lhs, rhs);
            assert!(replaced.iter().all(|v| *v == 0.0), "{kernel:?}");
            let mut accumulated = start.clone();
            multiply_with(kernel, &mut accumulated, true, lhs, rhs);
            assert_eq!(accumulated, start, "{kernel:?}");
        }
    }

    #[test]
    fn a_view_past_its_storage_is_refused() {
        let data = values(10, 6);
        let lhs = View { data: &data, rows: 3, cols: 4, row_stride: 4, col_stride: 1 };
        let rhs = View { data: &data, rows: 4, cols: 2, row_stride: 2, col_stride: 1 };
        let mut out = vec![0.0; 6];
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            multiply_into(&mut out, false, lhs, rhs);
        }));
        assert!(refused.is_err());
    }
}
