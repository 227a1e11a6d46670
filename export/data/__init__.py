"""Offline data loaders: MNIST digits (mnist.py), faces (faces.py), the GPT's prose corpus
(prose.py) and the text classifier's labelled docstrings (labelled_texts.py)."""
