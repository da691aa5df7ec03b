"""Tiny real models under DataJuicer's file names, trained here from generated text:
a fastText language-id model (lid.176.bin, labels en/zh), a SentencePiece model
(en.sp.model), a KenLM ARPA model over its pieces (en.arpa.bin: KenLM reads ARPA text
whatever the file is called) and a Hugging Face tokenizer folder (tokenizer.json)."""
from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

EN_WORDS = ("the quick brown fox jumps over a lazy dog while we read books about rivers mountains "
            "and cities people walk to school every morning because weather is good today").split()
ZH_CHARS = "我们今天去学校读书天气很好人们每天早上走路城市山河的是在有了和这那"
HF_TOKENIZER = "EleutherAI/pythia-6.9b-deduped"  # DataJuicer's fixed tokenizer name, as a folder


def english_lines(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(EN_WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def chinese_lines(n: int, seed: int = 2) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ZH_CHARS) for _ in range(rng.randint(5, 15))) for _ in range(n)]


def build_fasttext(folder: Path) -> Path:
    import fasttext

    train = folder / "lid-train.txt"
    lines = [f"__label__en {t}" for t in english_lines(300)] + [f"__label__zh {t}" for t in chinese_lines(300)]
    random.Random(3).shuffle(lines)
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Character n-grams let unsegmented Chinese get a label; a small bucket keeps the file small.
    model = fasttext.train_supervised(input=str(train), dim=16, epoch=10, minn=1, maxn=2, bucket=20000,
                                      thread=1, seed=7, verbose=0)
    path = folder / "lid.176.bin"
    model.save_model(str(path))
    train.unlink()
    return path


def build_sentencepiece(folder: Path, lang: str = "en") -> Path:
    import sentencepiece as spm

    train = folder / "sp-train.txt"
    train.write_text("\n".join(english_lines(400, seed=4)) + "\n", encoding="utf-8")
    prefix = folder / lang
    spm.SentencePieceTrainer.train(input=str(train), model_prefix=str(prefix), vocab_size=50,
                                   model_type="unigram", num_threads=1, minloglevel=2)
    (folder / f"{lang}.vocab").unlink()
    path = folder / f"{lang}.sp.model"
    (folder / f"{lang}.model").rename(path)
    train.unlink()
    return path


def build_arpa(folder: Path, sp_model: Path, lang: str = "en") -> Path:
    """A bigram ARPA model (with add-one unigrams and back-off weights) over the pieces of
    the SentencePiece model, counted on generated English."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    sp.load(str(sp_model))
    sentences = [["<s>"] + sp.encode_as_pieces(t) + ["</s>"] for t in english_lines(300, seed=5)]
    vocab = sorted({sp.id_to_piece(i) for i in range(sp.get_piece_size())} - {"<s>", "</s>", "<unk>"})
    unigrams = Counter(w for s in sentences for w in s[1:])
    bigrams = Counter((a, b) for s in sentences for a, b in zip(s, s[1:]))
    words = ["<unk>", "<s>", "</s>"] + vocab
    total = sum(unigrams.values()) + len(words)
    uni_lines, bi_lines = [], []
    for w in words:
        p = -99.0 if w == "<s>" else math.log10((unigrams[w] + 1) / total)
        bow = math.log10(0.4) if w != "</s>" else 0.0
        uni_lines.append(f"{p:.6f}\t{w}\t{bow:.6f}")
    contexts = Counter(a for a, _ in bigrams.elements())
    for (a, b), c in sorted(bigrams.items()):
        bi_lines.append(f"{math.log10(0.6 * c / contexts[a]):.6f}\t{a} {b}")
    text = ("\\data\\\n" f"ngram 1={len(uni_lines)}\n" f"ngram 2={len(bi_lines)}\n\n\\1-grams:\n"
            + "\n".join(uni_lines) + "\n\n\\2-grams:\n" + "\n".join(bi_lines) + "\n\n\\end\\\n")
    path = folder / f"{lang}.arpa.bin"
    path.write_text(text, encoding="utf-8")
    return path


def build_hf_tokenizer(folder: Path, name: str = HF_TOKENIZER) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]", "<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(english_lines(300, seed=6) + chinese_lines(100, seed=6), trainer=trainer)
    path = folder / name
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    # What transformers needs to load the folder as a fast tokenizer (DataJuicer does).
    (path / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast", '
                                                '"unk_token": "[UNK]"}\n')
    (path / "config.json").write_text('{"model_type": "gpt_neox"}\n')
    return path


def build_all(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    build_fasttext(folder)
    sp = build_sentencepiece(folder)
    build_arpa(folder, sp)
    build_hf_tokenizer(folder)
    return folder
