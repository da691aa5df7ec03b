#!/usr/bin/env python3
"""Rebuild worker/djworker/ops/assets/{flagged_words,stopwords}.json from BigScience's
data-preparation repository (the ROOTS filtering lists).

Usage: scripts/build-word-lists.py PATH/TO/data-preparation
The two source files are Python modules holding only literals (lists, dicts, `+` of
lists and names of earlier lists); they are evaluated from their syntax tree, never run."""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

SOURCE_DIR = "preprocessing/training/01b_oscar_cleaning_and_filtering"
ASSETS = Path(__file__).resolve().parents[1] / "worker" / "djworker" / "ops" / "assets"


def literal(node: ast.AST, names: dict) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List):
        return [literal(e, names) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {literal(k, names): literal(v, names) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return literal(node.left, names) + literal(node.right, names)
    if isinstance(node, ast.Name):
        return names[node.id]
    raise ValueError(f"unexpected syntax at line {node.lineno}: {ast.dump(node)[:80]}")


def assignments(path: Path) -> dict:
    names: dict = {}
    for stmt in ast.parse(path.read_text("utf-8")).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            names[stmt.targets[0].id] = literal(stmt.value, names)
    return names


def main(repo: str) -> None:
    source = Path(repo) / SOURCE_DIR
    for kind in ("flagged_words", "stopwords"):
        lists = assignments(source / f"{kind}.py")[kind]
        out = {lang: list(dict.fromkeys(words)) for lang, words in sorted(lists.items())}  # order kept, repeats dropped
        (ASSETS / f"{kind}.json").write_text(json.dumps(out, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        print(kind, {lang: len(words) for lang, words in out.items()})


if __name__ == "__main__":
    main(sys.argv[1])
