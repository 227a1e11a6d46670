"""The GPT: model.py, export.py (KV-cache graph + parity), build.py (train, publish), hf.py (GPT-2 import)."""
