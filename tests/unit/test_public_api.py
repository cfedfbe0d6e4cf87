import oxiflow


def test_public_api_is_pinned() -> None:
    assert sorted(oxiflow.__all__) == sorted(
        [
            "BatchTransform",
            "OxiConfig",
            "OxiData",
            "OxiSpec",
            "Sink",
            "Source",
            "StepContext",
            "Transform",
            "__version__",
            "load_pipeline",
            "oxi",
            "run_pipeline",
        ]
    )
    for name in oxiflow.__all__:
        assert getattr(oxiflow, name) is not None


def test_field_docs_read_docstrings_lazily_with_overrides() -> None:
    from pydantic import Field

    from oxiflow.oxi import OxiConfig, field_docs

    class Base(OxiConfig):
        a: int = 1
        """Doc of a."""
        b: int = 2

    class Child(Base):
        a: int = 3
        """Child's a,
        on two lines."""
        c: str = Field("x", description="explicit wins")
        """ignored"""

    assert field_docs(Child) == {"a": "Child's a,\non two lines.", "b": "", "c": "explicit wins"}
    assert field_docs(Base)["a"] == "Doc of a."
