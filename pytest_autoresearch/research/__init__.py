"""The research loop: the controller, the keep rule, the stale policy, the journal, the wiring.

``loop`` drives the experiments over an executor; ``decide`` and ``stale`` are the pure
policies it applies; ``journal`` is the write-ahead record; ``session`` builds all of them
from a pytest session and ``hooks`` hands the session over to them.
"""
