//! Decibel conversions: configs speak dB and dBm, the formulas want linear watts.

/// dB to a linear power ratio.
pub fn db_to_linear(db: f64) -> f64 {
    10f64.powf(db / 10.0)
}

/// Linear power ratio to dB.
pub fn linear_to_db(x: f64) -> f64 {
    10.0 * x.log10()
}

/// dBm to watts.
pub fn dbm_to_watt(dbm: f64) -> f64 {
    db_to_linear(dbm - 30.0)
}
