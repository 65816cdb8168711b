"""Shared helpers for the transformer course: each module names the notebook that introduces it."""
