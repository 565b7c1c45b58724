//! Choosing where tensors live: `cpu` (burn's flex backend) or `cuda:N` (with the `cuda` feature).

use crate::error::ModelError;
use burn::tensor::Device;

/// The autodiff device for a config string.
pub fn parse_device(spec: &str) -> Result<Device, ModelError> {
    let spec = spec.trim();
    if spec == "cpu" {
        return Ok(Device::flex().autodiff());
    }
    if let Some(idx) = spec.strip_prefix("cuda:").or(if spec == "cuda" { Some("0") } else { None }) {
        let n: usize =
            idx.parse().map_err(|_| ModelError::invalid("training.device", format!("bad CUDA index in {spec:?}")))?;
        return cuda(n, spec);
    }
    Err(ModelError::invalid("training.device", format!("{spec:?} is not a device; expected cpu or cuda:N")))
}

/// burn's CUDA runtime panics on its own worker thread when the driver is missing or the index names no
/// GPU, so both are checked here first and refused as a config error naming the field.
#[cfg(feature = "cuda")]
fn cuda(n: usize, spec: &str) -> Result<Device, ModelError> {
    let gpus =
        cuda_driver::gpu_count().map_err(|e| ModelError::invalid("training.device", format!("{spec:?}: {e}")))?;
    if n >= gpus {
        return Err(ModelError::invalid(
            "training.device",
            format!("{spec:?}: this machine has {gpus} CUDA device(s), numbered from 0"),
        ));
    }
    Ok(Device::cuda(n).autodiff())
}

#[cfg(feature = "cuda")]
mod cuda_driver {
    use libloading::{Library, Symbol};

    /// The names the NVIDIA driver's library is installed under on Linux.
    const DRIVER: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

    /// How many GPUs the driver sees: `cuInit` then `cuDeviceGetCount`, the driver API's own two calls.
    pub fn gpu_count() -> Result<usize, String> {
        // SAFETY: loading the driver runs only its initialisers, which the CUDA runtime would run anyway.
        let lib = DRIVER.iter().find_map(|name| unsafe { Library::new(*name) }.ok()).ok_or_else(|| {
            format!("no NVIDIA driver found ({} not loadable); this machine cannot run CUDA", DRIVER.join(" or "))
        })?;
        // SAFETY: both symbols have these C signatures in every CUDA driver since 2.0 (CUresult is a C int).
        unsafe {
            let init: Symbol<unsafe extern "C" fn(u32) -> i32> =
                lib.get(b"cuInit\0").map_err(|e| format!("the NVIDIA driver has no cuInit: {e}"))?;
            let count: Symbol<unsafe extern "C" fn(*mut i32) -> i32> = lib
                .get(b"cuDeviceGetCount\0")
                .map_err(|e| format!("the NVIDIA driver has no cuDeviceGetCount: {e}"))?;
            match init(0) {
                0 => {}
                100 => return Ok(0), // CUDA_ERROR_NO_DEVICE
                code => return Err(format!("the NVIDIA driver failed to start (cuInit returned CUresult {code})")),
            }
            let mut n = 0i32;
            match count(&mut n) {
                0 => Ok(n.max(0) as usize),
                code => Err(format!("the NVIDIA driver could not count GPUs (CUresult {code})")),
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(_n: usize, spec: &str) -> Result<Device, ModelError> {
    Err(ModelError::invalid("training.device", format!("{spec:?} needs a build with `--features cuda`")))
}
