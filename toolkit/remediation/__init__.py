"""The remediation contract and catalog, command quoting, and per-platform helpers."""
