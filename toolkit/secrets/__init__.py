"""Secrets: references resolved at run time, masked everywhere; handing new ones over once."""
