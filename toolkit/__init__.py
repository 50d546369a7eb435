"""itops: one-line, audited remediations for L2 support (check → apply → verify)."""

__version__ = "0.1.0"
