"""The course machinery around the model: data, checkpoints, the resumable trainer, measuring, plotting, recording."""
