"""The transformer, written from scratch (torch only); helpers.course holds the machinery the notebooks use around it."""
