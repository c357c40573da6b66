"""Where trials run: in this process, in K local worktrees, or on a Ray cluster.

``base`` holds what crosses the controller/worker line (``Trial``, ``TrialResult``) and
the ``Executor`` protocol; ``serial``, ``worktree`` and ``ray`` implement it. Nothing
heavy is imported here: each executor imports what it needs (Ray only when used).
"""

from pytest_autoresearch.executors.base import Executor, Trial, TrialResult, run_trial

__all__ = ["Executor", "Trial", "TrialResult", "run_trial"]
