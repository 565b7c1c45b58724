//! One loop, compiled once per x86-64 vector width and run as the widest copy the CPU has.
//!
//! The element-wise and row loops ([`super::math`]'s GELU, [`super::rows`]' softmax and LayerNorm) are
//! written so that the compiler vectorises them; built for the baseline target they get SSE2's four lanes.
//! [`copies!`] compiles a loop's body three times (baseline, AVX2, AVX-512F) and calls the widest one the
//! CPU runs. The AVX-512 copy is compiled with FMA available (rustc's `avx512f` implies `fma`), yet no copy
//! fuses a multiply and an add: Rust's floating-point semantics do not allow contracting `a * b + c` (rustc
//! gives LLVM no `contract` flag), so an FMA is emitted only where the code asks for one (`mul_add`, which
//! these loops never call). So every copy performs the same IEEE operations in the same order: which one ran
//! does not change a bit. The tests compare every copy this CPU has against the baseline, and check the
//! no-contraction rule itself in a loop compiled with FMA enabled.
//! Zen 5 and recent Intel cores run 512-bit vectors at full width: there the AVX-512 copies took a default
//! round's training from 1.90-1.92 s to 1.85-1.87 s (interleaved).

/// An instruction set that this CPU was checked to run. Only [`Isa::available`], [`Isa::best`] and
/// [`Isa::baseline`] (which every CPU of the target runs) make one, so a copy is never called on a CPU
/// without its features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa(Level);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Baseline,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    /// Every instruction set this CPU runs, widest first; the last is the baseline.
    pub fn available() -> Vec<Isa> {
        #[cfg(target_arch = "x86_64")]
        let wide = [
            (std::arch::is_x86_feature_detected!("avx512f"), Level::Avx512),
            (std::arch::is_x86_feature_detected!("avx2"), Level::Avx2),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let wide: [(bool, Level); 0] = [];
        let runs = wide.into_iter().filter(|(has, _)| *has).map(|(_, level)| level);
        runs.chain([Level::Baseline]).map(Isa).collect()
    }

    /// The widest instruction set this CPU runs, looked up once.
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Isa::available()[0])
    }

    /// The copy that runs on every CPU of the target.
    pub fn baseline() -> Isa {
        Isa(Level::Baseline)
    }
}

/// `copies! { fn name(args) -> ret { body } ... }` makes a module `name` per function, holding `on(isa,
/// args)`, which runs the body compiled for `isa`, and `best(args)`, which runs the widest copy. The body
/// sees the enclosing module's items.
macro_rules! copies {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block)*) => {
        $(
            $(#[$doc])*
            pub(crate) mod $name {
                #[allow(unused_imports)]
                use super::*;
                use $crate::kernels::simd::Isa;

                #[inline(always)]
                fn body($($arg: $ty),*) $(-> $ret)? $body

                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }

                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }

                /// The body compiled for `isa`.
                pub(crate) fn on(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
                    #[cfg(target_arch = "x86_64")]
                    {
                        if isa.is_avx512() {
                            // SAFETY: an `Isa` naming AVX-512 is only made after checking the CPU for it.
                            return unsafe { avx512($($arg),*) };
                        }
                        if isa.is_avx2() {
                            // SAFETY: as above, for AVX2.
                            return unsafe { avx2($($arg),*) };
                        }
                    }
                    let _ = isa;
                    body($($arg),*)
                }

                /// The widest copy this CPU runs.
                #[inline]
                pub(crate) fn best($($arg: $ty),*) $(-> $ret)? {
                    on(Isa::best(), $($arg),*)
                }
            }
        )*
    };
}
pub(crate) use copies;

#[cfg(target_arch = "x86_64")]
impl Isa {
    /// Whether this is AVX-512 (and so, since only `available` makes a wide `Isa`, the CPU runs it).
    pub(crate) fn is_avx512(self) -> bool {
        self.0 == Level::Avx512
    }

    /// Whether this is AVX2, likewise.
    pub(crate) fn is_avx2(self) -> bool {
        self.0 == Level::Avx2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list holds exactly the copies this CPU can run, widest first, so `best` is the widest and a copy
    /// is never skipped on a CPU that has it.
    #[test]
    fn the_available_copies_are_the_cpus_own_widest_first() {
        let all = Isa::available();
        assert_eq!(all.last(), Some(&Isa::baseline()));
        #[cfg(target_arch = "x86_64")]
        {
            let avx512 = std::arch::is_x86_feature_detected!("avx512f");
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            assert_eq!(all.iter().filter(|i| i.is_avx512()).count(), usize::from(avx512));
            assert_eq!(all.iter().filter(|i| i.is_avx2()).count(), usize::from(avx2));
            assert_eq!(all.len(), 1 + usize::from(avx512) + usize::from(avx2));
            assert!(!avx512 || all[0].is_avx512(), "{all:?}");
            assert!(!avx2 || avx512 || all[0].is_avx2(), "{all:?}");
        }
    }

    /// `a * b + c` compiled with FMA enabled, as the AVX-512 copies are.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn product_plus_sum_with_fma_enabled(a: &[f32], b: &[f32], c: &[f32], out: &mut [f32]) {
        for (((o, x), y), z) in out.iter_mut().zip(a).zip(b).zip(c) {
            *o = x * y + z;
        }
    }

    /// Why the copies agree although the AVX-512 one may use FMA: the compiler does not contract a product
    /// and a sum into one fused operation, even in a vectorised loop where FMA is enabled. Inputs where a
    /// fused result differs from the rounded product plus the sum make a contraction visible.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_product_and_a_sum_are_never_fused_behind_the_codes_back() {
        if !std::arch::is_x86_feature_detected!("fma") || !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("this CPU has no FMA; nothing to check");
            return;
        }
        let x = 1.0f32 + f32::EPSILON * 2048.0; // 1 + 2^-12: its square needs 25 bits
        let (a, b, c) = (vec![x; 64], vec![x; 64], vec![-1.0f32; 64]);
        let mut out = vec![0.0f32; 64];
        // SAFETY: the CPU was checked for AVX2 and FMA above.
        unsafe { product_plus_sum_with_fma_enabled(&a, &b, &c, &mut out) };
        let separate = std::hint::black_box(x) * std::hint::black_box(x) - 1.0;
        let fused = x.mul_add(x, -1.0);
        assert_ne!(separate.to_bits(), fused.to_bits(), "the inputs must tell the two apart");
        assert!(out.iter().all(|o| o.to_bits() == separate.to_bits()), "contracted: {:?} (fused {fused})", out[0]);
    }
}
