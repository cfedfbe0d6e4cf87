"""The state store (runs, step metrics, cursors, loads, schema versions), pipeline locks and the run
recorder. See docs/state.md. Import from the submodules: ``oxiflow.state.store``, ``.lock``, ``.recorder``."""
