"""The exercise grader: the checks of every exercise, their feedback, and the learner's workspace (exercises/)."""
