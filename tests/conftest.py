"""Shared fixtures for the test suite."""
import pytest
import torch

from helpers.reference import copy_block_from_torch as copy_block  # noqa: F401 - re-exported for the tests
from helpers.reference import copy_mha_from_torch as copy_mha  # noqa: F401


# The tests use tiny tensors: one thread avoids the thread start-up and contention costs that dominate them.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
