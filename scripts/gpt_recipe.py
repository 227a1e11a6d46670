"""One GPT recipe on the build split: held-out bits per byte, seconds per step (the 2026-12-02 runs)."""
# usage: python scripts/gpt_recipe.py THREADS STEPS LR VOCAB DROPOUT [SEED] [docs|nodocs] [SHORT_FRACTION]
import sys, time, json, torch
from genserve.export.data.prose import encode_stream, load_corpus, split_documents, train_tokenizer, stdlib_docstrings
from genserve.export.families.gpt.build import HELDOUT_FRACTION, heldout_score
from genserve.export.families.gpt.model import GPTConfig
from genserve.export.families.gpt.train import train_gpt
th, steps, lr, vocab, drop = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
seed = int(sys.argv[6]) if len(sys.argv) > 6 else 0
usedocs = (sys.argv[7] if len(sys.argv) > 7 else "docs") == "docs"
short = float(sys.argv[8]) if len(sys.argv) > 8 else 0.0
torch.set_num_threads(th)
t0 = time.time()
docs = load_corpus()
train_docs, held = split_documents(docs, HELDOUT_FRACTION, 0)
if usedocs:
    train_docs = train_docs + stdlib_docstrings()
tok = train_tokenizer([d.text for d in train_docs], vocab)
stream = encode_stream(tok, train_docs)
prep = time.time() - t0
cfg = GPTConfig(vocab_size=tok.get_vocab_size(), dropout=drop)
t = time.time()
res = train_gpt(cfg, stream, steps=steps, batch_size=4, lr=lr, seed=seed, short_fraction=short, checkpoint_dir=None, progress=False)
tr = time.time() - t
t = time.time()
h = heldout_score(res.model, tok, held).metrics()["heldout_bits_per_byte"]
print(json.dumps(dict(th=th, steps=steps, lr=lr, vocab=vocab, drop=drop, seed=seed, docs=usedocs, short=short, bpb=round(h, 4),
      prep=round(prep, 1), train=round(tr, 1), ms_step=round(1000 * tr / steps, 1), score_s=round(time.time() - t, 1),
      tokens=len(stream), last_loss=round(sum(res.history[-20:]) / 20, 3))), flush=True)
