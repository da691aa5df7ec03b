"""How much of a DataJuicer recipe runs here: `dj-process --check-recipe FILE`, and the
generated docs/datajuicer-compat.md.

Every global key is native (a Recipe field), mapped onto one, accepted without effect,
refused, or unknown; every op is native, adapted (DataJuicer installed, run through the
adapter), or missing, with the models it needs. Nothing runs: ops are built (native ones
validate their args) but no data is read and no model is loaded.

The list of DataJuicer's ops comes from data/datajuicer_ops.json, a snapshot of the pinned
py-data-juicer release (scripts/snapshot-datajuicer-ops.py), so the report and the docs work
without DataJuicer installed."""
from __future__ import annotations

import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .djcatalog import MEDIA, datajuicer_ops, datajuicer_version  # noqa: F401
from .djkeys import DJ_TYPES, IGNORED, MAPPED, NOTES, REFUSED, SECTIONS, yaml_load
from .errors import RecipeError

GLOBAL_OP_TYPES = ("deduplicator", "selector", "grouper", "aggregator", "pipeline")
TAG_MODELS = {"hf": "a Hugging Face model", "vllm": "a vLLM-served model", "api": "an API model endpoint"}


def models_needed(name: str, args: Optional[dict[str, Any]] = None) -> str:
    """What model files an op needs, as far as its name and args tell ('' for none)."""
    from .ops.catalog import MODEL_OPS

    args = args or {}
    if name in MODEL_OPS:
        return MODEL_OPS[name]
    if args.get("tokenization") is True:
        if name == "alphanumeric_filter":
            return f"a Hugging Face tokenizer ({args.get('hf_tokenizer', 'EleutherAI/pythia-6.9b-deduped')})"
        return f"a SentencePiece model ({args.get('lang', 'en')}.sp.model)"
    dj = datajuicer_ops().get(name)
    if dj:
        return ", ".join(TAG_MODELS[t] for t in dj["tags"] if t in TAG_MODELS)
    return ""


@dataclass(frozen=True)
class Item:
    """One key or op of a recipe and what this engine does with it."""

    kind: str  # "key" or "op"
    name: str
    status: str  # native | mapped | ignored | refused | unknown | adapted | missing | invalid
    detail: str = ""
    models: str = ""

    @property
    def blocks(self) -> bool:
        return self.status in ("refused", "unknown", "missing", "invalid")


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # recipe-wide errors (validation)

    @property
    def runnable(self) -> bool:
        return not self.problems and not any(i.blocks for i in self.items)

    def of(self, kind: str) -> list[Item]:
        return [i for i in self.items if i.kind == kind]


def key_status(key: str, value: Any, native: set[str]) -> Item:
    if key in native and key not in MAPPED:
        return Item("key", key, "native")
    if key in MAPPED:
        return Item("key", key, "mapped", f"onto {MAPPED[key]}")
    if key in IGNORED:
        return Item("key", key, "ignored", IGNORED[key])
    if key in REFUSED:
        harmless, why = REFUSED[key]
        return Item("key", key, "native" if value == harmless else "refused", "" if value == harmless else why)
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], [k.rsplit(".", 1)[-1] for k in native | set(DJ_TYPES)], n=1)
    return Item("key", key, "unknown", "DataJuicer does not know this key either"
                + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def op_status(name: str, args: dict[str, Any], where: str, text_key: Optional[str] = None) -> Item:
    from .ops import build_op, registered_ops
    from .ops.catalog import MODEL_OPS
    from .ops.dj_adapter import datajuicer_registry

    models = models_needed(name, args)
    dj = datajuicer_ops().get(name)
    if name in registered_ops():
        if text_key and "text_key" not in args:
            args = {**args, "text_key": text_key}
        try:
            build_op(name, args, where)
        except RecipeError as err:
            return Item("op", name, "invalid", str(err), models)
        return Item("op", name, "native", "", models)
    registry = datajuicer_registry()
    if name in MODEL_OPS:  # refused before the adapter is asked: the models are never downloaded
        return Item("op", name, "missing", "needs a model file that this engine does not download", models)
    if registry is not None and name in registry.modules and dj and dj["type"] in ("mapper", "filter"):
        return Item("op", name, "adapted", "runs DataJuicer's own op through the adapter", models)
    if dj:
        return Item("op", name, "missing", missing_reason(name), models)
    hint = difflib.get_close_matches(name, list(registered_ops()) + list(datajuicer_ops()), n=1)
    return Item("op", name, "unknown", "neither this engine nor DataJuicer has this op"
                + (f" (did you mean {hint[0]!r}?)" if hint else ""))


def missing_reason(name: str) -> str:
    dj = datajuicer_ops().get(name)
    if dj is None:
        return "not implemented here"
    what = f"DataJuicer {dj['modality']} {dj['type']}"
    if dj["type"] in GLOBAL_OP_TYPES:
        return f"{what}: a whole-dataset op, not implemented here (the adapter runs only mappers and filters)"
    return f"{what}: not native here; install the DataJuicer extra (pip install 'datajuicer-ft[datajuicer]') " \
           "to run it through the adapter"


def check_recipe(path: str, overrides: Optional[dict[str, Any]] = None) -> Report:
    """Classify every key and op of a recipe without running anything."""
    from .config import Recipe, deep_merge, load_recipe

    import yaml

    if not Path(path).is_file():
        raise RecipeError(f"recipe file {path!r} does not exist; check the --check-recipe path")
    try:
        raw = yaml_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path!r} must be a mapping of settings, got {type(raw).__name__}")
    data = deep_merge(raw, overrides or {})
    report = Report()
    native = set(Recipe.model_fields)
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            fields = set(Recipe.model_fields[key].annotation.model_fields)
            report.items += [Item("key", f"{key}.{sub}", "native") if sub in fields
                             else key_status(f"{key}.{sub}", v, set()) for sub, v in value.items()]
        elif key != "process":
            report.items.append(key_status(key, value, native))
    custom = data.get("custom_operator_paths")
    if custom:  # their ops must be registered before the ops are classified
        from .custom_ops import load_custom_operators
        try:
            load_custom_operators([custom] if isinstance(custom, str) else list(custom))
        except RecipeError as err:
            report.problems.append(str(err))
    text_keys = data.get("text_keys", "text")
    text_key = text_keys if isinstance(text_keys, str) else (text_keys or ["text"])[0]
    for i, entry in enumerate(data.get("process") or []):
        for name, args in (entry or {}).items():
            report.items.append(op_status(name, dict(args or {}), f"process[{i}]", text_key))
    try:
        load_recipe(None, raw=data, check_ops=False)
    except RecipeError as err:
        if "unknown key" not in str(err):  # those are listed per key above
            report.problems.append(str(err))
    return report


def render(report: Report, path: str) -> str:
    lines = [f"recipe {path}: " + ("can run here" if report.runnable else "CANNOT run here")]
    lines.append("")
    lines.append("ops:")
    for item in report.of("op"):
        model = f" [needs {item.models}]" if item.models else ""
        detail = f": {item.detail}" if item.detail else ""
        lines.append(f"  {item.status:8s} {item.name}{model}{detail}")
    lines.append("")
    lines.append("global keys:")
    for item in report.of("key"):
        lines.append(f"  {item.status:8s} {item.name}" + (f": {item.detail}" if item.detail else ""))
    if report.problems:
        lines.append("")
        lines += [f"problem: {p}" for p in report.problems]
    return "\n".join(lines) + "\n"


# --- docs/datajuicer-compat.md ------------------------------------------------------------

DOC_HEADER = """# DataJuicer compatibility

Generated by `python -m djworker.compat --write-docs docs/datajuicer-compat.md` from the code and
the op list of py-data-juicer {version} (`worker/djworker/data/datajuicer_ops.json`); a test fails
when it is out of date. For one recipe, `dj-process --check-recipe FILE` reports the same per key
and op, and whether the recipe can run.

Op status: **native** (implemented here, DataJuicer-exact), **adapter** (runs DataJuicer's own op
when the `datajuicer` extra is installed: `pip install -c requirements-lock.txt -e '.[datajuicer]'`),
**not supported** (DataJuicer's whole-dataset ops other than the native deduplicators and
selectors), **refused (needs a model)** (model-based ops: refused before any work, since models
are never downloaded here).

Native deduplicators and selectors run as a checkpointed global stage. A selector keeps the rows
DataJuicer's keeps, in input order (DataJuicer returns them in the selection's order: by value,
by group or shuffled). So after a selector, a later op whose result depends on row order
(`random_selector`, ties in the other selectors, which copy a deduplicator keeps) may keep other
rows than DataJuicer does. `random_selector` keeps the first k positions of numpy's
`default_rng(seed).permutation(rows)`, with DataJuicer's seed 42 unless `seed` (not a DataJuicer
parameter) says otherwise: only the seed and the number of rows reaching it decide, so executors,
partitionings and resumes agree; a `select_num` above the row count keeps every row once where
DataJuicer repeats rows. `ray_bts_minhash_deduplicator` keeps exactly the rows
`document_minhash_deduplicator` keeps with the same settings (the same algorithm with another
union-find); its Ray actor, batch and memory parameters (`union_find_parallel_num`,
`union_threshold`, `max_pending_*`, `num_*_returns`, `merge_batch_size`, `minhash_batch_size`,
`memory_per_sample`, `actor_memory`, `task_memory`) are accepted and have no effect, and it runs on
every executor, not only Ray.
"""


def op_doc_status(name: str) -> str:
    from .ops import registered_ops

    from .ops.catalog import MODEL_OPS

    dj = datajuicer_ops()[name]
    if name in registered_ops():
        return "native"
    if name in MODEL_OPS:
        return "refused (needs a model)"
    if dj["type"] in ("mapper", "filter"):
        return "adapter"
    return "not supported"


def compat_markdown() -> str:
    from .config import Recipe

    out = [DOC_HEADER.format(version=datajuicer_version())]
    ops = datajuicer_ops()
    text_ops = [o for o in ops.values() if o["modality"] == "text"]
    out.append(f"## Text ops ({len(text_ops)})\n")
    out.append("| op | type | status | needs |")
    out.append("|---|---|---|---|")
    from .ops import registered_ops

    native = registered_ops()
    for op in text_ops:
        name = op["name"]
        needs = models_needed(name)
        if name in native:
            needs = "a tokenizer with `tokenization: true`" if "tokenization" in native[name].model_fields else ""
        out.append(f"| `{name}` | {op['type']} | {op_doc_status(name)} | {needs} |")
    media = [o for o in ops.values() if o["modality"] != "text"]
    out.append(f"\n## Image, video, audio and multimodal ops ({len(media)})\n")
    out.append("None is native. A recipe using them fails before any work, naming them; mappers and "
               "filters among them run through the adapter when the `datajuicer` extra and their own "
               "dependencies are installed.\n")
    out.append(", ".join(f"`{o['name']}`" for o in media) + "\n")
    out.append(f"## Global keys ({len(DJ_TYPES)})\n")
    out.append("Keys DataJuicer does not know are refused with a did-you-mean. A key accepted without "
               "effect is reported once per run as a WARNING event saying why.\n")
    out.append("| key | status | notes |")
    out.append("|---|---|---|")
    native_keys = set(Recipe.model_fields)
    for key in DJ_TYPES:
        section, _, sub = key.rpartition(".")
        if section:
            fields = set(Recipe.model_fields[section].annotation.model_fields)
            item = Item("key", key, "native") if sub in fields else key_status(key, None, set())
        else:
            item = key_status(key, REFUSED.get(key, (None,))[0], native_keys)
        status = {"native": "implemented", "mapped": "implemented", "ignored": "accepted, no effect",
                  "refused": "refused when set"}[item.status]
        if key in REFUSED:
            status, detail = "refused when set", REFUSED[key][1]
        else:
            detail = item.detail or NOTES.get(key, "")
        out.append(f"| `{key}` | {status} | {detail.replace('|', '/')} |")
    return "\n".join(out) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--write-docs":
        Path(argv[1]).write_text(compat_markdown(), encoding="utf-8")
        return 0
    print("usage: python -m djworker.compat --write-docs docs/datajuicer-compat.md", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
