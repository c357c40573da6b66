"""pytest-autoresearch: experiments as tests.

``@metric`` turns a test into a measurement; ``pytest --autoresearch -n N`` turns a
session into a noise-aware research loop; ``run_untrusted`` runs the code under
optimisation in a sandbox of its own (docs/untrusted.md). Importing this package is
cheap: it pulls in nothing heavier than pytest itself (``run_untrusted`` is imported on
first use).
"""

from typing import Any

from pytest_autoresearch.metrics.metric import Measurement, metric

__all__ = ["Measurement", "metric", "run_untrusted", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``run_untrusted`` and its types, imported when first asked for (PEP 562)."""
    if name in ("run_untrusted", "UntrustedResult", "UntrustedError"):
        from pytest_autoresearch.sandbox import untrusted

        return getattr(untrusted, name)
    raise AttributeError(f"module 'pytest_autoresearch' has no attribute {name!r}")
