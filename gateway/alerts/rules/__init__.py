"""Alert rules (R5.2): a strictly checked rules file and a pure engine that turns de-identified
readings and liveness events into `Condition`s.

    schema      the rules file (`gateway/alerts/rules.yaml` is the shipped default): models,
                loading, the checks the models cannot make
    plans       compiled forms: thresholds with their quiet band, event plans, night slots
    state       what families share: places cut to a rule's level, devices holding a
                condition, the cap on every store
    thresholds  threshold (and overload) and time-at-level rules
    events      event kinds and flags
    absence     offline and elder-water rules
    meters      night flow and daily use
    vitals      SpO2 low together with an abnormal heart rate
    composites  building fire incidents over other rules' conditions
    engine      RuleEngine: routes readings, liveness and ticks to the families

A new rule kind is a model in `schema` and its evaluation in the family module that owns it.
"""

from gateway.alerts.rules.engine import DEFAULT_MAX_STATES, RuleEngine
from gateway.alerts.rules.schema import (
    DEFAULT_RULES,
    WHAT,
    AbsenceRule,
    AnomalyRule,
    Bound,
    BuildingFireRule,
    CompositeRule,
    DailyUseRule,
    ElderWaterRule,
    EventRule,
    NightFlowRule,
    OfflineRule,
    OverloadRule,
    Rule,
    RuleIn,
    RuleSet,
    RulesFile,
    ThresholdLevel,
    ThresholdRule,
    TimeAtLevelRule,
    TimeLevel,
    VitalSignsRule,
    When,
    default_rules_text,
    load_rules,
    parse_rules,
)
from gateway.alerts.rules.state import HouseholdLookup

__all__ = [
    "DEFAULT_MAX_STATES",
    "DEFAULT_RULES",
    "WHAT",
    "AbsenceRule",
    "AnomalyRule",
    "Bound",
    "BuildingFireRule",
    "CompositeRule",
    "DailyUseRule",
    "ElderWaterRule",
    "EventRule",
    "HouseholdLookup",
    "NightFlowRule",
    "OfflineRule",
    "OverloadRule",
    "Rule",
    "RuleEngine",
    "RuleIn",
    "RuleSet",
    "RulesFile",
    "ThresholdLevel",
    "ThresholdRule",
    "TimeAtLevelRule",
    "TimeLevel",
    "VitalSignsRule",
    "When",
    "default_rules_text",
    "load_rules",
    "parse_rules",
]
