"""Network devices: configuration text, operations and output parsing."""
