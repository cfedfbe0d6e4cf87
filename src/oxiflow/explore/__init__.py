"""Looking at data before building a pipeline on it: ``oxi profile`` (per-column statistics).

``profile.py`` computes a profile as a plain, JSON-ready document with DuckDB aggregates over
the input (pushed down into the file scan when the reader allows it); ``profile_html.py`` renders
that document as one self-contained HTML page with inline SVG charts.
"""
