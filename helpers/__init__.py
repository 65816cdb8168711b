"""The transformer, written from scratch (torch only); helpers.course holds the machinery around it."""
