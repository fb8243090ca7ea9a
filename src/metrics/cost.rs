//! The cost: each pool's rate and what it added up to, the saving against an all-ECS fleet, and
//! the spend of the peak. Every figure comes from the engine's [`CostEstimate`]: the money spent
//! between decisions is integrated there, once, for the agent and the drill alike.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::{CostLabels, CurrencyLabels, FCounter, FGauge, lock};
use crate::engine::CostEstimate;
use crate::model::{GatewayKey, Pool};

#[derive(Default)]
pub struct CostMetrics {
    rate: Family<CostLabels, FGauge>,
    total: Family<CostLabels, FCounter>,
    saving_rate: Family<CurrencyLabels, FGauge>,
    all_ecs_rate: Family<CurrencyLabels, FGauge>,
    peak_eci_spend: Family<CurrencyLabels, FGauge>,
    /// The currencies exported per gateway, so that forgetting it removes every series.
    currencies: Mutex<HashMap<GatewayKey, Vec<String>>>,
}

impl CostMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        r.register_with_unit(
            "cost_rate",
            "Estimated cost of the gateway per second and pool (ecs: the dedicated nodes' price, fixed whether or not the gateway uses them; eci: the marginal spend, requests rounded to an ECI size), in the label's currency",
            Unit::Other("per_second".into()),
            m.rate.clone(),
        );
        r.register(
            "cost",
            "Estimated cost accumulated by the gateway per pool since spillway started, in the label's currency",
            m.total.clone(),
        );
        r.register_with_unit(
            "saving_rate",
            "Estimated saving per second against an all-ECS fleet sized for the last day's peak",
            Unit::Other("per_second".into()),
            m.saving_rate.clone(),
        );
        r.register_with_unit(
            "all_ecs_peak_cost_rate",
            "What an all-ECS fleet sized for the last day's peak would cost per second",
            Unit::Other("per_second".into()),
            m.all_ecs_rate.clone(),
        );
        r.register(
            "peak_eci_spend",
            "ECI spend of the peak in progress (ECI pods running), or of the last one, in the label's currency",
            m.peak_eci_spend.clone(),
        );
        m
    }

    pub fn record(&self, key: &GatewayKey, c: &CostEstimate) {
        {
            let mut currencies = lock(&self.currencies);
            let seen = currencies.entry(key.clone()).or_default();
            if !seen.contains(&c.currency) {
                seen.push(c.currency.clone());
            }
        }
        for (pool, per_hour, spent) in [
            (Pool::Ecs, c.ecs_per_hour, c.ecs_spent),
            (Pool::Eci, c.eci_per_hour, c.eci_spent),
        ] {
            let l = CostLabels::new(key, pool, &c.currency);
            self.rate.get_or_create(&l).set(per_hour / 3600.0);
            self.total.get_or_create(&l).inc_by(spent.max(0.0));
        }
        let l = CurrencyLabels::new(key, &c.currency);
        self.saving_rate
            .get_or_create(&l)
            .set(c.saving_per_hour / 3600.0);
        self.all_ecs_rate
            .get_or_create(&l)
            .set(c.all_ecs_peak_per_hour / 3600.0);
        self.peak_eci_spend.get_or_create(&l).set(c.peak_eci_spend);
    }

    pub fn forget(&self, key: &GatewayKey) {
        let currencies = lock(&self.currencies).remove(key).unwrap_or_default();
        for currency in &currencies {
            for pool in [Pool::Ecs, Pool::Eci] {
                let l = CostLabels::new(key, pool, currency);
                self.rate.remove(&l);
                self.total.remove(&l);
            }
            let l = CurrencyLabels::new(key, currency);
            self.saving_rate.remove(&l);
            self.all_ecs_rate.remove(&l);
            self.peak_eci_spend.remove(&l);
        }
    }
}
