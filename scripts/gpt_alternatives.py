"""GPT alternatives: train on the pydoc prose split, held-out and train bits per byte, params, seconds."""
# usage: python scripts/gpt_alternatives.py [NAME ...] [--custom NAME JSON]   (one thread)
# Runs the named alternatives of ALTERNATIVES (all without names) one after another, prints a JSON
# row after each and a table at the end. --custom runs one recipe given as JSON (its keys: those of
# a row below; "config" holds GPTConfig fields). Held-out bpb is build.py's `heldout_score` on
# build.py's split (seed 0); train bpb is the same score on as many training tokens, to watch the gap.
import json
import sys
import time

import torch
from genserve.export.data.prose import encode_stream, load_corpus, split_documents, train_tokenizer
from genserve.export.families.gpt.build import HELDOUT_FRACTION, heldout_score
from genserve.export.families.gpt.model import GPTConfig
from genserve.export.families.gpt.train import train_gpt

torch.set_num_threads(1)


def recipe(steps: int, **config: object) -> dict:
    """`steps` of 4 x 512 tokens, AdamW from 3e-3, weight decay 0.1; GPTConfig fields (vocabulary 1,024
    unless given: the previous default's, so a row means what it meant when it was measured)."""
    return dict(steps=steps, batch_size=4, lr=3e-3, weight_decay=0.1, config={"vocab_size": 1024, **config})


ALTERNATIVES = {  # in the order measured for the README's table; the default is "4x128, vocab 2048, 1200 steps, dropout 0.1"
    "v1 (4x128, 400 steps)": recipe(400, dropout=0.0),  # the previous default
    "4x128, 1200 steps, dropout 0.1": recipe(1200, dropout=0.1),
    "4x192, 600 steps, dropout 0.1": recipe(600, n_embd=192, n_head=6, dropout=0.1),
    "4x128, 1200 steps, dropout 0.2": recipe(1200, dropout=0.2),
    "4x128, vocab 512, 1200 steps, dropout 0.2": recipe(1200, vocab_size=512, dropout=0.2),
    "4x128, vocab 2048, 1200 steps, dropout 0.1": recipe(1200, vocab_size=2048, dropout=0.1),
    "4x128, vocab 2048, 1200 steps, dropout 0.2": recipe(1200, vocab_size=2048, dropout=0.2),
}


def run(name: str, knobs: dict, docs: list, tokenizers: dict) -> dict:
    """Train one recipe on build.py's split; its held-out and train bits per byte."""
    config = GPTConfig(**knobs["config"])
    train_docs, held_docs = split_documents(docs, HELDOUT_FRACTION, 0)
    if config.vocab_size not in tokenizers:
        tokenizers[config.vocab_size] = train_tokenizer([d.text for d in train_docs], config.vocab_size)
    tokenizer = tokenizers[config.vocab_size]
    stream = encode_stream(tokenizer, train_docs)
    t = time.time()
    res = train_gpt(config, stream, steps=knobs["steps"], batch_size=knobs["batch_size"], lr=knobs["lr"],
                    weight_decay=knobs["weight_decay"], seed=0, checkpoint_dir=None, progress=False)
    secs = time.time() - t
    held = heldout_score(res.model, tokenizer, held_docs)
    train = heldout_score(res.model, tokenizer, train_docs, max_tokens=held.tokens)
    return dict(name=name, heldout_bpb=round(held.metrics()["heldout_bits_per_byte"], 3),
                train_bpb=round(train.metrics()["heldout_bits_per_byte"], 3), params=res.model.num_parameters(),
                train_secs=round(secs, 1), tokens_seen=knobs["steps"] * knobs["batch_size"] * config.block_size,
                train_tokens=len(stream), recipe=knobs)


args = sys.argv[1:]
if args[:1] == ["--custom"]:
    custom = json.loads(args[2])
    todo = {args[1]: {**recipe(custom.pop("steps", 400), **custom.pop("config", {})), **custom}}
else:
    todo = {n: ALTERNATIVES[n] for n in (args or ALTERNATIVES)}
docs, tokenizers, rows = load_corpus(), {}, []
for name, knobs in todo.items():
    rows.append(run(name, knobs, docs, tokenizers))
    print(json.dumps(rows[-1]), flush=True)
print(f"\n| alternative | held-out bpb | train bpb | params | train s (1 thread) |\n|---|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['name']} | {r['heldout_bpb']:.3f} | {r['train_bpb']:.3f} | {r['params']:,} | {r['train_secs']:.0f} |")
