"""The GPT: model.py, train.py (step loop), export.py (KV-cache graph + parity), build.py, hf.py (GPT-2 import)."""
