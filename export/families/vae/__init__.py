"""The (class-conditional) MLP VAE on the digits: model.py, train.py, build.py."""
