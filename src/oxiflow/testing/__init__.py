"""A conformance kit for plugin authors (and for oxiflow's own oxis): ``check_oxi`` runs an oxi's
registration, config model and runtime through the checks every oxi must pass.

See docs/plugins.md; the checks are listed in :mod:`oxiflow.testing.conformance`.
"""

from oxiflow.testing.conformance import CheckResult, ConformanceReport, check_oxi

__all__ = ["CheckResult", "ConformanceReport", "check_oxi"]
