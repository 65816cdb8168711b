"""One module of checks per group of notebooks; each check names the exercise it grades."""
