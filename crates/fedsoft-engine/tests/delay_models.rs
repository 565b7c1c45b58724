//! The offline stage and the online controller price an upload with the same delay model as the round that
//! then happens: same bits per value (index overhead included or not), same bandwidth rule, same rate model.

use fedsoft_core::ledger::BitModel;
use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::plan::Planner;
use fedsoft_wireless::bandwidth::{allocate, delays};
use fedsoft_wireless::simulate::dense_round_delay;
use rand::SeedableRng;
use rand::seq::index;

const MINIMAL: &str = "[model]\narch = \"vit-b16\"\n[lora]\nlayers = [0, 3, 6, 9]\n";

fn settings() -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for model in ["paper", "physical"] {
        for rule in ["equal", "inverse_log", "min_max"] {
            for overhead in [false, true] {
                let mut o = vec![
                    format!("wireless.rate_model=\"{model}\""),
                    format!("wireless.bandwidth_rule=\"{rule}\""),
                    format!("wireless.index_overhead={overhead}"),
                ];
                if model == "physical" {
                    o.push("wireless.channel.cell_radius_m=300".into());
                }
                out.push(o);
            }
        }
    }
    out
}

#[test]
fn offline_online_and_realised_delays_agree_for_every_setting() {
    for o in settings() {
        let cfg = ExperimentConfig::from_toml(MINIMAL, "test.toml", &o).unwrap();
        let w = &cfg.wireless;
        let p = Planner::new(&cfg).unwrap();
        let r = p.tsfa.offline.best_rank;
        let numel = r * cfg.params_per_rank().unwrap();
        // Bits: the engine's dense payload is what the offline link and the controller scenario assume.
        let bit_model = BitModel { value_bits: w.value_bits, index_overhead: w.index_overhead };
        let dense_bits = bit_model.paper_bits(numel, numel) as f64;
        assert_eq!(dense_bits, p.tsfa.link.bits_per_value(r) * p.tsfa.link.params(r), "{o:?}");
        assert_eq!(dense_bits, p.scenario(r).dense_bits, "{o:?}");

        // Online: the round at ratio rho, with this rule, takes a_t (1 - rho) on any channel draw.
        for round in 0..5 {
            let clients: Vec<usize> = (0..cfg.clients.per_round).map(|i| i * 7 + round as usize).collect();
            let snr: Vec<f64> = p.tsfa.cell.round_snr(cfg.seed, round, &clients).iter().map(|c| c.snr).collect();
            let a_t = dense_round_delay(w.rate_model, w.bandwidth_rule, dense_bits, &snr, w.bandwidth_hz).unwrap();
            let bits = vec![dense_bits * 0.3; snr.len()];
            let shares = allocate(w.bandwidth_rule, w.rate_model, &bits, &snr, w.bandwidth_hz).unwrap();
            let realised = delays(w.rate_model, &bits, &shares, &snr, w.bandwidth_hz).into_iter().fold(0.0, f64::max);
            assert!((realised / (a_t * 0.3) - 1.0).abs() < 1e-6, "{o:?}: {realised} vs {}", a_t * 0.3);
        }

        // Offline: the average-channel dense delay is the mean over scheduled sets at the mean SNRs.
        let mut rng = rand::rngs::ChaCha8Rng::seed_from_u64(11);
        let sets = 3000;
        let mean = (0..sets)
            .map(|_| {
                let set = index::sample(&mut rng, cfg.clients.total, cfg.clients.per_round);
                let snr: Vec<f64> = set.iter().map(|c| p.tsfa.cell.mean_snr[c]).collect();
                dense_round_delay(w.rate_model, w.bandwidth_rule, dense_bits, &snr, w.bandwidth_hz).unwrap()
            })
            .sum::<f64>()
            / sets as f64;
        let offline = p.tsfa.link.dense_delay(r);
        assert!((mean / offline - 1.0).abs() < 0.03, "{o:?}: offline {offline} vs sampled mean {mean}");
    }
}
