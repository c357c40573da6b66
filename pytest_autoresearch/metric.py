"""Placeholder: replaced by the metric-tests work."""


class Measurement:
    pass


def metric(*args, **kwargs):
    raise NotImplementedError
