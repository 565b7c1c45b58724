//! `[data]` and `[partition]`: which data set, how much of it, and how it is split over clients.

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

impl DataConfig {
    pub fn asset(&self) -> Option<&'static str> {
        self.dataset.asset()
    }
}
