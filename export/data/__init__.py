"""Offline data loaders: mnist.py, faces.py, prose.py (the GPT corpus), labelled_texts.py."""
