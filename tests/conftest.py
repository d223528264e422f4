"""Shared test set-up."""
import os

import torch

# Under pytest-xdist each worker gets one thread: two workers on two cores, no oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
