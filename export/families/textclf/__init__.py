"""The BERT-architecture text classifier: model.py, backbone.py (pretrained start), train.py
(fine-tuning), export.py (fp32 + int8, scoring), build.py, hf.py (BertForSequenceClassification import)."""
