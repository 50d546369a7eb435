"""Reports for auditors and leads: KPI (HTML, CSV) and audit (HTML)."""
