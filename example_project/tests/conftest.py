"""Shared set-up for the example's tests."""

import os

# Set before torch loads: OpenMP threads that spin while waiting slow every step down
# several-fold when the cores are shared (CI runners, pytest-xdist, other jobs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
