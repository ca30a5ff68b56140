"""`uv run apis lab`: bench and chaos for every pattern with one seed, and the report that shows
them — a self-contained HTML page and its figures as PNG and SVG files.

- `runner`: runs the measurements and writes `lab.json` (everything the report shows);
- `figures`: the figures from that JSON (matplotlib, headless);
- `page`: the HTML page from that JSON and the figures, every figure embedded (no network).

The report is built from the JSON alone, so it can be built again from a kept `lab.json`.
"""
