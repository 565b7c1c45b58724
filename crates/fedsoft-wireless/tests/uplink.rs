//! Channels, rates and bandwidth rules (docs/algorithms.md §3, §8.6; WIRELESS.md).

use fedsoft_wireless::bandwidth::{BandwidthRule, allocate, delays, min_max_physical, physical_share_for_deadline};
use fedsoft_wireless::channel::{Cell, ChannelConfig};
use fedsoft_wireless::rate::RateModel;
use proptest::prelude::*;

#[test]
fn worked_numbers_of_wireless_md() {
    // Physical model, mean fading, 10 MHz split equally over 10 clients, 23 dBm, 9.44 Mbit.
    let cfg = ChannelConfig { distances_m: Some(vec![50.0, 250.0, 500.0]), min_distance_m: 10.0, ..Default::default() };
    let cell = Cell::new(&cfg, 3, 10e6, 0).unwrap();
    let bits: f64 = 8.0 * 2.0 * 12.0 * 1536.0 * 32.0; // r = 8 on q, v of 12 blocks at d = 768, fp32
    assert!((bits / 1e6 - 9.44).abs() < 0.01);
    let expect = [0.49, 0.90, 1.40];
    for (snr, want) in cell.mean_snr.iter().zip(expect) {
        let t = RateModel::Physical.delay(bits, 0.1, 10e6, *snr);
        assert!((t - want).abs() < 0.01, "{t} vs {want}");
    }
}

#[test]
fn channels_are_keyed_by_round_and_client_only() {
    let cell = Cell::new(&ChannelConfig::default(), 100, 1e7, 3).unwrap();
    let a = cell.round_snr(3, 7, &[1, 5, 9]);
    let b = cell.round_snr(3, 7, &[5, 40]);
    assert_eq!(a[1], b[0]);
    assert_ne!(cell.round_snr(3, 8, &[5])[0], b[0]);
    // Distances in the annulus.
    let d = cell.distances_m.as_ref().unwrap();
    assert!(d.iter().all(|&x| (35.0..=500.0).contains(&x)));
    // Mean fading power is 1.
    let mean: f64 = (0..20_000).map(|t| Cell::fading(3, t, 0)).sum::<f64>() / 20_000.0;
    assert!((mean - 1.0).abs() < 0.03, "{mean}");
}

#[test]
fn channel_config_errors_name_the_field() {
    let bad = ChannelConfig { min_distance_m: 600.0, ..Default::default() };
    assert!(Cell::new(&bad, 5, 1e6, 0).unwrap_err().to_string().contains("wireless.channel.min_distance_m"));
    let bad = ChannelConfig { distances_m: Some(vec![10.0]), ..Default::default() };
    assert!(Cell::new(&bad, 5, 1e6, 0).unwrap_err().to_string().contains("wireless.channel.distances_m"));
    assert!(
        Cell::new(&ChannelConfig::default(), 5, -1.0, 0).unwrap_err().to_string().contains("wireless.bandwidth_hz")
    );
}

fn snrs() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.01f64..1000.0, 1..12)
}

proptest! {
    /// Rule (41) equalises every scheduled client's delay under the paper's model.
    #[test]
    fn rule_41_equalises_delays_under_the_paper_model(snr in snrs()) {
        let bits = vec![1e6; snr.len()];
        let b = allocate(BandwidthRule::InverseLog, RateModel::Paper, &bits, &snr, 1e6).unwrap();
        prop_assert!((b.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let t = delays(RateModel::Paper, &bits, &b, &snr, 1e6);
        let max = t.iter().cloned().fold(0.0, f64::max);
        prop_assert!(t.iter().all(|x| (x - max).abs() <= 1e-9 * max));
    }

    /// The Lambert-W split equalises delays under the physical model and never loses to the equal split.
    #[test]
    fn lambert_w_split_equalises_and_beats_equal(snr in snrs(), kbits in prop::collection::vec(100.0f64..5000.0, 12)) {
        let bits: Vec<f64> = kbits[..snr.len()].iter().map(|k| k * 1e3).collect();
        let (b, t) = min_max_physical(&bits, &snr, 1e6).unwrap();
        prop_assert!((b.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let d = delays(RateModel::Physical, &bits, &b, &snr, 1e6);
        for x in &d {
            prop_assert!((x - t).abs() <= 1e-6 * t, "{:?} vs {}", d, t);
        }
        let eq = allocate(BandwidthRule::Equal, RateModel::Physical, &bits, &snr, 1e6).unwrap();
        let eq_max = delays(RateModel::Physical, &bits, &eq, &snr, 1e6).into_iter().fold(0.0, f64::max);
        prop_assert!(t <= eq_max * (1.0 + 1e-9));
    }

    /// The closed form for one client's share agrees with a direct bisection on the rate equation.
    #[test]
    fn lambert_w_share_matches_direct_solution(bits in 1e4f64..1e7, snr in 0.01f64..1e4, t in 0.1f64..100.0) {
        let b = physical_share_for_deadline(bits, snr, 1e6, t);
        let rate_needed = bits / t;
        if b.is_finite() {
            let r = RateModel::Physical.rate(b, 1e6, snr);
            prop_assert!((r - rate_needed).abs() <= 1e-6 * rate_needed, "{} vs {}", r, rate_needed);
        } else {
            // Even the whole spectrum (in the limit) cannot carry it.
            prop_assert!(1e6 * snr / std::f64::consts::LN_2 <= rate_needed * (1.0 + 1e-9));
        }
    }
}

/// The start of a round is what the controller plans with and what the round then transmits on: for every
/// rate model and bandwidth rule, sending `(1 - rho)` of the dense payload over the started round's
/// channels takes `a_t (1 - rho)`, and a round's schedule and channels depend on (seed, round) only.
#[test]
fn a_started_round_takes_the_delay_its_controller_planned() {
    use fedsoft_wireless::simulate::Scenario;
    use fedsoft_wireless::uplink::Uplink;
    let cfg = ChannelConfig::default();
    for rate_model in [RateModel::Paper, RateModel::Physical] {
        for bandwidth_rule in [BandwidthRule::Equal, BandwidthRule::InverseLog, BandwidthRule::MinMax] {
            let scn = Scenario {
                cell: Cell::new(&cfg, 50, 1e7, 9).unwrap(),
                seed: 9,
                per_round: 6,
                bandwidth_hz: 1e7,
                rate_model,
                bandwidth_rule,
                dense_bits: 32.0 * 8.0 * 3072.0,
            };
            let uplink = Uplink { bandwidth_hz: 1e7, rate_model, bandwidth_rule };
            for round in 0..5 {
                let start = scn.start(round).unwrap();
                assert_eq!(start, scn.start(round).unwrap(), "a round's start is a function of (seed, round)");
                assert_eq!(start.clients.len(), 6);
                assert_eq!(start.channels.iter().map(|c| c.client).collect::<Vec<_>>(), start.clients);
                assert_eq!(scn.dense_delay(round).unwrap(), start.a_t);
                let snr: Vec<f64> = start.channels.iter().map(|c| c.snr).collect();
                for rho in [0.0, 0.5, 0.9] {
                    let bits = vec![(1.0 - rho) * scn.dense_bits; snr.len()];
                    let sent = uplink.transmit(&bits, &snr, None).unwrap();
                    let planned = start.a_t * (1.0 - rho);
                    assert!(
                        (sent.round_delay_s - planned).abs() <= 1e-6 * planned,
                        "{rate_model:?} {bandwidth_rule:?} round {round} rho {rho}: {} vs {planned}",
                        sent.round_delay_s
                    );
                }
            }
            assert_ne!(scn.start(0).unwrap().clients, Scenario { seed: 10, ..scn.clone() }.start(0).unwrap().clients);
        }
    }
}
