//! `[data]` and `[partition]`: which data set, how much of it, and how it is split over clients.

use super::ConfigError;
use super::training::MAX_IMAGE_SIZE;
use crate::arch::Arch;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which data set, and how it is turned into model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: Dataset,
    /// Where the data set lives; the packaged ones default to the asset cache.
    pub path: Option<PathBuf>,
    /// Train samples kept per client on average (the train set is subsampled, stratified, to
    /// `clients.total` times this); all of them when absent.
    pub samples_per_client: Option<usize>,
    /// Test samples evaluated (a stratified subset); all when absent.
    pub test_samples: Option<usize>,
    /// For data sets without an official split.
    pub test_fraction: f64,
    /// Images: side after resizing, and the filter.
    pub image_size: usize,
    pub resize: fedsoft_data::image::Resize,
    /// Images: random crop and flip when training.
    pub augment: bool,
    /// Text: tokens per sample, including [CLS] and [SEP].
    pub max_len: usize,
    /// Brown: consecutive sentences per sample, minimum tokens, labels.
    pub sentences_per_sample: usize,
    pub min_tokens: usize,
    pub brown_labels: fedsoft_data::readers::brown::BrownLabels,
    /// CIFAR-100: fine (100) or coarse (20) labels.
    pub cifar100_labels: fedsoft_data::readers::cifar::Cifar100Label,
    /// CSV text: column names.
    pub label_column: String,
    pub text_column: String,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: Dataset::FashionMnist,
            path: None,
            samples_per_client: None,
            test_samples: None,
            test_fraction: 0.2,
            image_size: 56,
            resize: fedsoft_data::image::Resize::Bilinear,
            augment: false,
            max_len: 64,
            sentences_per_sample: 3,
            min_tokens: 10,
            brown_labels: fedsoft_data::readers::brown::BrownLabels::Groups,
            cifar100_labels: fedsoft_data::readers::cifar::Cifar100Label::Fine,
            label_column: "label".into(),
            text_column: "text".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dataset {
    FashionMnist,
    Mnist,
    Cifar10,
    Cifar100,
    AgNews,
    Brown,
    Spamassassin,
    ImageFolder,
    CsvText,
}

impl Dataset {
    pub fn is_text(self) -> bool {
        matches!(self, Dataset::AgNews | Dataset::Brown | Dataset::Spamassassin | Dataset::CsvText)
    }
    /// The packaged asset holding this data set, if one does.
    pub fn asset(self) -> Option<&'static str> {
        match self {
            Dataset::FashionMnist => Some("fashion-mnist"),
            Dataset::Brown => Some("brown"),
            Dataset::Spamassassin => Some("spamassassin"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionConfig(pub fedsoft_core::partition::Scheme);

impl Default for PartitionConfig {
    fn default() -> Self {
        PartitionConfig(fedsoft_core::partition::Scheme::Iid)
    }
}

impl PartitionConfig {
    /// The scheme's parameters, checked with the other sections before any model or data loads (what depends
    /// on the data itself is checked again when it is split).
    pub fn validate(&self, clients: usize, samples_per_client: Option<usize>) -> Result<(), ConfigError> {
        let samples = samples_per_client.map_or(usize::MAX, |s| s.saturating_mul(clients));
        self.0.check(clients, samples).map_err(|e| ConfigError::from_core("partition", e))
    }
}

impl DataConfig {
    pub fn asset(&self) -> Option<&'static str> {
        self.dataset.asset()
    }
}

impl DataConfig {
    /// Checks for a run on a model of kind `arch` (a custom geometry's kind is known only from its checkpoint;
    /// the engine checks it there).
    pub fn validate(&self, arch: Arch) -> Result<(), ConfigError> {
        let d = self;
        let text_model = matches!(arch, Arch::MinilmL6 | Arch::BertBase | Arch::DistilbertBase);
        let vision_model = matches!(arch, Arch::VitB16 | Arch::Dinov2S14);
        if (text_model && !d.dataset.is_text()) || (vision_model && d.dataset.is_text()) {
            return Err(ConfigError::invalid(
                "data.dataset",
                format!("{:?} does not suit model.arch = {}", d.dataset, arch),
            ));
        }
        if d.asset().is_none() && d.path.is_none() {
            return Err(ConfigError::invalid(
                "data.path",
                format!("{:?} is not packaged: give the directory or file that holds it", d.dataset),
            ));
        }
        if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
            return Err(ConfigError::invalid(
                "data.test_fraction",
                format!("must be in (0, 1), got {}", d.test_fraction),
            ));
        }
        if d.samples_per_client == Some(0) || d.test_samples == Some(0) {
            return Err(ConfigError::invalid("data", "samples_per_client and test_samples must be positive"));
        }
        if d.image_size == 0 || d.max_len < 2 || d.sentences_per_sample == 0 {
            return Err(ConfigError::invalid(
                "data",
                "image_size, max_len (>= 2) and sentences_per_sample must be positive",
            ));
        }
        if self.image_size > MAX_IMAGE_SIZE {
            return Err(ConfigError::invalid(
                "data.image_size",
                format!("{} pixels is more than {MAX_IMAGE_SIZE} per side", self.image_size),
            ));
        }
        Ok(())
    }
}
