"""Backups: files fetched from hosts, and network configurations kept in git."""
