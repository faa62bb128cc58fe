//! Budgets: parsing the USD ceilings into micro-USD, checking and normalising alert thresholds,
//! and which Services each Budget counts.
//!
//! Spend, windows and enforcement belong to the gateway; this module only says what the limits
//! are and whom they apply to.

use std::collections::{BTreeMap, BTreeSet};

use crate::budget::{Budget, BudgetAction, Usd};
use crate::common::ObjectId;
use crate::conditions::reason;
use crate::config::BudgetConfig;
use crate::service::Service;

use super::diagnostics::{BUDGET, Diagnostics};

/// The compiled Budgets and the Service names each one counts.
pub(super) struct Budgets {
    compiled: BTreeMap<ObjectId, (BudgetConfig, BTreeSet<String>)>,
}

impl Budgets {
    /// The Budgets that count the spend of Service `service`, sorted by id.
    pub(super) fn counting(&self, service: &ObjectId) -> Vec<ObjectId> {
        self.compiled
            .iter()
            .filter(|(id, (_, services))| id.namespace == service.namespace && services.contains(&service.name))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The Budgets as written in the config, sorted by id.
    pub(super) fn into_config(self) -> Vec<BudgetConfig> {
        self.compiled.into_values().map(|(config, _)| config).collect()
    }
}

/// Compiles every Budget. A Budget without a usable ceiling is left out; a bad threshold is
/// reported and dropped but the Budget still enforces its ceilings, because leaving it out over
/// an alert setting would lift the spending limit.
pub(super) fn compile(
    objects: BTreeMap<ObjectId, &Budget>,
    services: &BTreeMap<ObjectId, &Service>,
    diags: &mut Diagnostics,
) -> Budgets {
    let mut budgets = Budgets { compiled: BTreeMap::new() };
    for (id, budget) in objects {
        let spec = &budget.spec;
        let mut usable = true;
        if spec.daily_usd.is_none() && spec.monthly_usd.is_none() {
            usable = false;
            diags.error(
                BUDGET,
                &id,
                reason::INVALID_SPEC,
                "sets no ceiling; set spec.dailyUSD, spec.monthlyUSD or both (for example \"25\")".to_owned(),
            );
        }
        let mut amount = |field: &str, usd: Option<&Usd>| -> Option<u64> {
            let usd = usd?;
            let micro = usd.micro_usd();
            if micro.is_none() {
                usable = false;
                diags.error(
                    BUDGET,
                    &id,
                    reason::INVALID_SPEC,
                    format!(
                        "spec.{field} is \"{}\", which is not a USD amount; write a decimal string with up to \
                         9 digits before the point and up to 6 after, for example \"25\" or \"7.50\"",
                        usd.0
                    ),
                );
            }
            micro
        };
        let daily_micro_usd = amount("dailyUSD", spec.daily_usd.as_ref());
        let monthly_micro_usd = amount("monthlyUSD", spec.monthly_usd.as_ref());

        let (valid, invalid): (BTreeSet<u8>, BTreeSet<u8>) =
            spec.alert_thresholds.iter().partition(|t| (1..=100).contains(*t));
        if !invalid.is_empty() {
            let listed = invalid.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            diags.error(
                BUDGET,
                &id,
                reason::INVALID_SPEC,
                format!(
                    "spec.alertThresholds has {listed}, outside 1 to 100, so they are ignored; \
                     thresholds are percentages of a ceiling from 1 to 100"
                ),
            );
        }

        if spec.services.is_empty() {
            diags.warning(
                BUDGET,
                &id,
                reason::INVALID_SPEC,
                "counts no Services; list the Services in this namespace in spec.services".to_owned(),
            );
        }
        let named: BTreeSet<String> = spec.services.iter().cloned().collect();
        for name in &named {
            let service = ObjectId::new(&id.namespace, name);
            if !services.contains_key(&service) {
                diags.warning(
                    BUDGET,
                    &id,
                    reason::SERVICE_NOT_FOUND,
                    format!(
                        "spec.services names Service {service}, which does not exist, so nothing is counted for it; \
                         create the Service or fix the name"
                    ),
                );
            }
        }

        if usable {
            let config = BudgetConfig {
                id: id.clone(),
                daily_micro_usd,
                monthly_micro_usd,
                alert_thresholds: valid.into_iter().collect(),
                block: spec.action == BudgetAction::Block,
            };
            budgets.compiled.insert(id, (config, named));
        }
    }
    budgets
}
