"""The KPI names: the keys of every KPI object, in order (docs/tickets.md documents each).

A module of its own so that itops.toml's schema (toolkit.settings) can check the names under
[kpi.targets] at every load without importing the KPI computation (~9 ms of imports).
"""

from __future__ import annotations

# the KPIs in business minutes (lower is better)
TIME_KEYS = (
    "time_to_respond_mean",
    "time_to_respond_median",
    "time_to_respond_p90",
    "time_to_resolve_mean",
    "time_to_resolve_median",
    "time_to_resolve_p90",
    "time_to_fulfil_mean",
    "time_to_fulfil_median",
    "time_to_fulfil_p90",
)

KPI_KEYS = (
    "tickets_opened",
    "incidents_opened",
    "requests_opened",
    "tickets_resolved",
    "incidents_resolved",
    "requests_fulfilled",
    "response_sla_compliance",
    "resolution_sla_compliance",
    "incident_response_sla_compliance",
    "incident_resolution_sla_compliance",
    "request_response_sla_compliance",
    "request_fulfilment_sla_compliance",
    *TIME_KEYS,
    "first_contact_resolution_rate",
    "escalation_rate",
    "recurrence_rate",
    "reopen_rate",
    "csat_mean",
    "csat_share_4_plus",
    "surveys",
    "complaints",
    "backlog_open",
    "backlog_past_sla",
    "backlog_age_mean",
    "backlog_age_max",
    "automation_rate",
    "incident_automation_rate",
    "request_automation_rate",
    "remediation_runs",
    "remediation_success_rate",
)
