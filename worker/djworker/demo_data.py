"""The standard benchmark/demo corpus: deterministic, seeded, DataJuicer-flavoured dirt.

Row i has 3-120 words from a 17-word vocabulary; a URL when i%5==0, an email when
i%7==0, `www.siteN.net` when i%11==0; when i%3==0 its first three spaces become NBSP
plus a tail of tab, space, ideographic space, space; when i%13==0 a mojibake `café`
and curly quotes are appended."""
from __future__ import annotations

import argparse
import random
from typing import Iterator

import orjson

VOCAB = ["data", "juicer", "clean", "text", "model", "train", "token", "partition", "check", "point",
         "resume", "ray", "cluster", "fault", "tolerant", "pipeline", "sample"]


def rows(n: int, seed: int = 42) -> Iterator[dict]:
    rng = random.Random(seed)
    for i in range(n):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(3, 120))]
        if i % 5 == 0:
            words.insert(rng.randrange(len(words) + 1), f"https://example.com/page/{i}?q=1")
        if i % 7 == 0:
            words.insert(rng.randrange(len(words) + 1), f"user{i}@example.org")
        if i % 11 == 0:
            words.insert(rng.randrange(len(words) + 1), f"www.site{i}.net")
        text = " ".join(words)
        if i % 3 == 0:
            text = text.replace(" ", "\u00a0", 3) + "\t \u3000 "
        if i % 13 == 0:
            text += " cafÃ© \u201cquoted\u201d"
        yield {"text": text, "id": i}


def write_jsonl(path: str, n: int, seed: int = 42) -> None:
    with open(path, "wb") as fh:
        for row in rows(n, seed):
            fh.write(orjson.dumps(row) + b"\n")


def main() -> None:
    p = argparse.ArgumentParser(description="write the demo/benchmark corpus as JSONL")
    p.add_argument("path")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    write_jsonl(a.path, a.rows, a.seed)


if __name__ == "__main__":
    main()
