"""The BERT-architecture text classifier: model.py, train.py (fine-tuning), export.py (fp32 + int8), build.py."""
