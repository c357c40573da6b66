"""pytest-autoresearch: experiments as tests.

``@metric`` turns a test into a measurement; ``pytest --autoresearch -n N`` turns a
session into a noise-aware research loop. Importing this package is cheap: it
pulls in nothing heavier than pytest itself.
"""

from pytest_autoresearch.metrics.metric import Measurement, metric

__all__ = ["Measurement", "metric", "__version__"]
__version__ = "0.1.0"
