"""Where experiment code runs, and what keeps it honest.

``evaluate`` runs the metric and guard tests in a fresh process through an ``isolation``
launcher and reads the values from the results ``channel``; ``fingerprint`` and
``treeguard`` notice what a run changed that git does not see; ``secrets`` keeps keys out.
"""
