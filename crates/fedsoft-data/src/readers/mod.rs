//! Readers for the data sets fedsoft knows, in their official on-disk layouts.

pub mod agnews;
pub mod brown;
pub mod cifar;
pub mod folder;
pub mod idx;
pub mod spam;
