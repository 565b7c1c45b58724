//! What a run writes: the record types live in `fedsoft-records`, shared with every reader.

pub use fedsoft_records::{ClientRecord, RoundRecord, Summary, TimeSplit};
