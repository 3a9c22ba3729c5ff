"""The `npucenter` command line (Typer + Rich); the only layer that prints."""
