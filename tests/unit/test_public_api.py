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
