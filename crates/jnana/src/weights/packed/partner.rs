//! A second worker for the packed weights' rows. The browser's CPU path is one wasm instance
//! without shared-memory threads (those need the standard library rebuilt with atomics), so a
//! second instance in its own Web Worker holds half of every packed weight and multiplies it
//! while the first does the other half. The app carries the messages ([`Partner`]); this module
//! splits the weights and serves them ([`PartnerHost`]).

use super::{zeroed_kernel, Kernel};
use candle_core::quantized::GgmlDType;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The other worker, as this one sees it. Calls are synchronous: the app blocks on a shared
/// buffer until the other side answers.
pub trait Partner {
    /// Takes the tiles of weight `id` (`n` rows of `k` values; [`PartnerHost::adopt`]).
    fn adopt(
        &self,
        id: u64,
        dtype: GgmlDType,
        n: usize,
        k: usize,
        tiles: &[u8],
    ) -> Result<(), String>;
    /// Starts `x W_id^T` for `m` rows of `x` and returns at once.
    fn start(&self, id: u64, x: &[f32], m: usize) -> Result<(), String>;
    /// Waits for the product started last: `m` rows of the weight's `n` values.
    fn finish(&self, out: &mut [f32]) -> Result<(), String>;
    /// Forgets weight `id`.
    fn release(&self, id: u64);
}

thread_local! {
    static PARTNER: RefCell<Option<Rc<dyn Partner>>> = const { RefCell::new(None) };
}

/// Weights packed from now on share their rows with `partner` (`None`: they stay whole). Weights
/// packed with an earlier partner fail with a clear error once it is replaced.
pub fn set_partner(partner: Option<Rc<dyn Partner>>) {
    PARTNER.with(|p| *p.borrow_mut() = partner);
}

pub(super) fn current() -> Option<Rc<dyn Partner>> {
    PARTNER.with(|p| p.borrow().clone())
}

/// Ids are never reused, so a weight released late cannot name another.
pub(super) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The partner's side: the weights it holds, by id.
#[derive(Default)]
pub struct PartnerHost {
    weights: HashMap<u64, Box<dyn Kernel>>,
    /// A weight whose tiles are arriving: its id, its tiles, the bytes written so far.
    adopting: Option<(u64, Box<dyn Kernel>, usize)>,
}

/// What a weight's tiles are, as [`PartnerHost::adopt_part`] is told.
pub struct TileShape {
    pub dtype: GgmlDType,
    pub n: usize,
    pub k: usize,
}

impl PartnerHost {
    /// Takes weight `id`'s tiles whole.
    pub fn adopt(&mut self, id: u64, shape: TileShape, tiles: &[u8]) -> Result<(), String> {
        self.adopt_part(id, shape, 0, tiles.len(), |dst| dst.copy_from_slice(tiles))
    }

    /// Takes `len` bytes of weight `id`'s tiles from `offset` on, parts in order: `fill`
    /// writes them in place (no second copy of the weight is made).
    pub fn adopt_part(
        &mut self,
        id: u64,
        shape: TileShape,
        offset: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), String> {
        let TileShape { dtype, n, k } = shape;
        if offset == 0 {
            let kernel = zeroed_kernel(dtype, n, k)
                .ok_or_else(|| format!("[{n}, {k}] {dtype:?} weights are not packed"))?;
            self.adopting = Some((id, kernel, 0));
        }
        let (adopting, kernel, filled) = self
            .adopting
            .as_mut()
            .ok_or_else(|| format!("weight {id}: a part came before its start"))?;
        let total = kernel.bytes();
        if *adopting != id || offset != *filled || offset + len > total {
            self.adopting = None;
            return Err(format!(
                "weight {id}: bytes {offset}..{} out of order",
                offset + len
            ));
        }
        fill(&mut kernel.tile_bytes_mut()[offset..offset + len]);
        *filled += len;
        if *filled == total {
            let (id, kernel, _) = self.adopting.take().expect("adopting");
            self.weights.insert(id, kernel);
        }
        Ok(())
    }

    /// `x W_id^T`: `m` rows of the weight's `n` values.
    pub fn matmul(&self, id: u64, x: &[f32], m: usize) -> Result<Vec<f32>, String> {
        let kernel = self
            .weights
            .get(&id)
            .ok_or_else(|| format!("no weight {id}"))?;
        let (k, _) = kernel.shape();
        if x.len() != m * k {
            return Err(format!("{} activations for {m} rows of {k}", x.len()));
        }
        Ok(kernel.matmul(x, m))
    }

    pub fn release(&mut self, id: u64) {
        self.weights.remove(&id);
    }

    /// Weights held.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::supported;
    use super::*;
    use crate::weights::Linear;
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};
    use std::cell::Cell;

    /// A partner in the same thread: the host answers at `start`.
    #[derive(Default)]
    struct InPlace {
        host: RefCell<PartnerHost>,
        answer: RefCell<Option<Result<Vec<f32>, String>>>,
        calls: Cell<usize>,
    }

    impl Partner for InPlace {
        fn adopt(
            &self,
            id: u64,
            dtype: GgmlDType,
            n: usize,
            k: usize,
            tiles: &[u8],
        ) -> Result<(), String> {
            self.host
                .borrow_mut()
                .adopt(id, TileShape { dtype, n, k }, tiles)
        }
        fn start(&self, id: u64, x: &[f32], m: usize) -> Result<(), String> {
            self.calls.set(self.calls.get() + 1);
            *self.answer.borrow_mut() = Some(self.host.borrow().matmul(id, x, m));
            Ok(())
        }
        fn finish(&self, out: &mut [f32]) -> Result<(), String> {
            let y = self.answer.borrow_mut().take().ok_or("nothing started")??;
            out.copy_from_slice(&y);
            Ok(())
        }
        fn release(&self, id: u64) {
            self.host.borrow_mut().release(id)
        }
    }

    fn linear(dtype: GgmlDType, n: usize, k: usize) -> Linear {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
            .collect();
        let w = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        Linear::new(QMatMul::from_qtensor(q).unwrap(), None, k, n)
    }

    /// A weight split with a partner answers exactly as the whole weight (the same kernel on the
    /// same rows), the partner holds its rows until the weight is dropped, and reading the
    /// weight back whole is refused rather than half-answered.
    #[test]
    fn a_split_weight_answers_as_the_whole_one() {
        if !supported() {
            eprintln!("this CPU has none of our kernels' features: nothing is packed or split");
            return;
        }
        for dtype in [GgmlDType::Q4K, GgmlDType::Q8_0] {
            // 5 groups of 16 rows: 3 stay, 2 go to the partner.
            let (n, k) = (80, 512);
            let mut whole = linear(dtype, n, k);
            whole.prepare_cpu_kernel();
            let partner = Rc::new(InPlace::default());
            set_partner(Some(partner.clone()));
            let mut split = linear(dtype, n, k);
            split.prepare_cpu_kernel();
            assert_eq!(
                partner.host.borrow().len(),
                1,
                "{dtype:?}: the partner holds one weight"
            );
            assert!(
                split.kernel_bytes() * 2 < whole.kernel_bytes() * 2 && split.kernel_bytes() > 0
            );
            assert_eq!(
                split.kernel_bytes() * 5,
                whole.kernel_bytes() * 3,
                "{dtype:?}: 3 of 5 groups stay"
            );
            for m in [1, 3, 6] {
                let x: Vec<f32> = (0..m * k)
                    .map(|i| (i * 104_729 % 997) as f32 / 498.5 - 1.0)
                    .collect();
                let x = Tensor::from_vec(x, (m, k), &Device::Cpu).unwrap();
                let a: Vec<f32> = whole
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let b: Vec<f32> = split
                    .forward(&x)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                assert_eq!(a, b, "{dtype:?} m={m}");
            }
            assert_eq!(partner.calls.get(), 3);
            assert!(
                split.weight().is_err(),
                "a split weight is not read back half"
            );
            drop(split);
            assert!(
                partner.host.borrow().is_empty(),
                "{dtype:?}: dropping the weight releases its rows"
            );
            // Once the partner is gone, a weight split with it fails clearly.
            let mut orphan = linear(dtype, n, k);
            orphan.prepare_cpu_kernel();
            set_partner(None);
            let x = Tensor::zeros((1, k), candle_core::DType::F32, &Device::Cpu).unwrap();
            let e = orphan.forward(&x).unwrap_err().to_string();
            assert!(e.contains("stopped"), "{e}");
        }
    }
}
