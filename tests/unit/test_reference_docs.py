from pathlib import Path

from oxiflow.plan.reference import render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "oxis.md"


def test_oxi_reference_is_current() -> None:
    # Regenerate with: .venv/bin/python -m oxiflow.plan.reference > docs/oxis.md
    assert DOC.read_text(encoding="utf-8") == render_reference()
