"""Typer command groups; each module adds its commands to the app."""
