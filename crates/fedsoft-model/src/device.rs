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

#[cfg(feature = "cuda")]
fn cuda(n: usize, _spec: &str) -> Result<Device, ModelError> {
    Ok(Device::cuda(n).autodiff())
}

#[cfg(not(feature = "cuda"))]
fn cuda(_n: usize, spec: &str) -> Result<Device, ModelError> {
    Err(ModelError::invalid("training.device", format!("{spec:?} needs a build with `--features cuda`")))
}
