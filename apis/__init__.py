"""Command line of the APIs Ecosystem workspace (`uv run apis ...`)."""
