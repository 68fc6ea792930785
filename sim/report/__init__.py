"""Edges that turn recommendations and sweeps into files: figures, the ADR, the CLI commands."""
