"""Shared fixtures for the test suite."""

import pytest
import torch

from builders import write_tsv

# The tests use tiny tensors: one thread avoids the thread start-up and contention costs that dominate them.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tsv(tmp_path):
    """A small pairs file in the Tatoeba format (builders.TSV_LINES)."""
    return write_tsv(tmp_path)
