"""Command groups beyond run/validate (explain, init, pipeline, plugins). Imported by main()."""

from __future__ import annotations
