"""One folder per model family: model.py (config -> layers -> model -> spec), build.py, and
whatever only that family needs."""
