//! The server's check of one upload before it can reach the aggregate.

use crate::experiment::Experiment;
use crate::pool::{ClientUpload, RoundTask};
use fedsoft_core::encoding::decode;
use fedsoft_core::sparsify::SparseUpdate;

impl Experiment {
    /// The server's check of one upload before it may reach the aggregate: the wire format (lengths,
    /// checksum, module shapes), the round and sender, finite values, and the method's budget at this
    /// round's ratio. The error is the logged reason for dropping it.
    pub fn accept(&self, task: &RoundTask<'_>, upload: &ClientUpload) -> Result<SparseUpdate, String> {
        // A decoding error already says "malformed upload"; say it once.
        let msg = decode(&upload.bytes, &self.plan.shapes).map_err(|e| match e {
            fedsoft_core::CoreError::Decode(_) => e.to_string(),
            other => format!("malformed upload: {other}"),
        })?;
        if u64::from(msg.round) != task.round {
            return Err(format!("stale upload: round {} while the server is in round {}", msg.round, task.round));
        }
        if msg.client as usize != upload.client {
            return Err(format!("upload names client {} but came from client {}", msg.client, upload.client));
        }
        let nnz = msg.update.nnz();
        let budget = self.cfg.method.name.upload_budget(&self.plan.shapes, task.rho, &self.cfg.method.options);
        if nnz > budget {
            return Err(format!(
                "over budget: {nnz} entries where {} at rho {} allows {budget}",
                self.cfg.method.name,
                task.rho.get()
            ));
        }
        if msg.update.modules.iter().any(|m| m.values.iter().any(|v| !v.is_finite())) {
            return Err("non-finite values in the update".into());
        }
        let (hw, hb) = (self.backbone.spec.hidden * self.task.classes.len(), self.task.classes.len());
        if upload.head.weight.len() != hw || upload.head.bias.len() != hb {
            return Err(format!(
                "head has {} + {} values, expected {hw} + {hb}",
                upload.head.weight.len(),
                upload.head.bias.len()
            ));
        }
        if upload.head.weight.iter().chain(&upload.head.bias).any(|v| !v.is_finite()) {
            return Err("non-finite values in the head".into());
        }
        Ok(msg.update)
    }
}
