"""One folder per model family: model.py (config -> layers -> model -> spec), build.py (its
`build(options)`, named in export/registry.py), and whatever only that family needs."""
