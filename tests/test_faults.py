"""Fault suite: injected faults end in a clear message and lose nothing.

Bad checkpoints and bad options for the command-line tools, failing and interrupted notebooks, truncated downloads,
killed saves and bad model settings. Each test checks the message a user sees and that no committed result changed.
"""
from __future__ import annotations

# ---- command-line tools: bad checkpoints, bad options, streams -------------------------------------------------

# ---- run_all.py: failing and interrupted notebooks, selection ---------------------------------------------------

# ---- data, saves and model settings ----------------------------------------------------------------------------
