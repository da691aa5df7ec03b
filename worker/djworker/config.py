"""The recipe: DataJuicer-shaped YAML, validated by pydantic before any work starts.

Nested sections (`partition`, `retry`, `intermediate_storage`, ...) win; the legacy
flat keys (`partition_size`, `max_retries`, `storage_format`, ...) are the fallback,
as DataJuicer's fault-tolerance guide specifies. Dotted CLI overrides
(`--checkpoint.strategy every_n_ops`) are applied to the raw mapping first, so they
are validated exactly like the file.

Over 300 lines because it is the recipe's schema: every section as a pydantic model, in one place."""
from __future__ import annotations

import difflib
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .djkeys import DJ_TYPES, SECTIONS, export_format, normalize, yaml_load  # noqa: F401 (export_format: re-exported)
from .errors import RecipeError
from .jobs import DEFAULT_WORK_DIR


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Strategy(str, Enum):
    every_op = "every_op"
    every_partition = "every_partition"
    every_n_ops = "every_n_ops"
    manual = "manual"
    disabled = "disabled"


class CheckpointConfig(Strict):
    enabled: bool = True
    strategy: Strategy = Strategy.every_op
    n_ops: int = Field(1, ge=1)
    op_names: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _manual_needs_names(self) -> "CheckpointConfig":
        if self.enabled and self.strategy == Strategy.manual and not self.op_names:
            raise ValueError("strategy 'manual' needs checkpoint.op_names (the ops to checkpoint after)")
        return self

    @property
    def effective(self) -> Strategy:
        return self.strategy if self.enabled else Strategy.disabled


class EventLoggingConfig(Strict):
    enabled: bool = True
    max_log_size_mb: float = Field(100, gt=0)
    backup_count: int = Field(5, ge=0)
    debug: bool = False  # also log DEBUG events (scheduling and resume decisions)
    resource_usage_interval_s: float = Field(30, gt=0)  # how often RESOURCE_USAGE samples the driver's tree


Backoff = Literal["exponential", "linear", "fixed"]


class PartitionConfig(Strict):
    size: Optional[int] = Field(None, ge=1)
    max_size_mb: Optional[float] = Field(None, gt=0)
    auto_configure: bool = False
    max_retries: Optional[int] = Field(None, ge=0)
    retry_backoff: Optional[Backoff] = None


class RetryConfig(Strict):
    max_retries: Optional[int] = Field(None, ge=0)
    retry_backoff: Optional[Backoff] = None
    base_delay_s: float = Field(1.0, ge=0)
    max_delay_s: float = Field(60.0, ge=0)
    jitter: float = Field(0.25, ge=0, le=1)


class IntermediateStorageConfig(Strict):
    format: Optional[Literal["parquet", "arrow", "jsonl"]] = None
    compression: Literal["snappy", "gzip", "zstd", "none"] = "zstd"
    use_arrow_batches: Optional[bool] = None
    arrow_batch_size: Optional[int] = Field(None, ge=1)
    arrow_memory_mapping: Optional[bool] = None
    preserve_intermediate_data: Optional[bool] = None
    cleanup_temp_files: bool = True
    cleanup_on_success: bool = False
    retention_policy: Literal["keep_all", "keep_failed_only", "cleanup_all"] = "keep_all"
    max_retention_days: Optional[float] = Field(7, ge=0)


class S3Config(Strict):
    endpoint_url: Optional[str] = None
    region: Optional[str] = None
    anon: bool = False
    # Explicit credentials (DataJuicer's dataset / export_aws_credentials); unset, the usual
    # AWS environment and config files apply.
    key: Optional[str] = Field(None, repr=False)
    secret: Optional[str] = Field(None, repr=False)
    token: Optional[str] = Field(None, repr=False)


class StorageConfig(Strict):
    s3: S3Config = Field(default_factory=S3Config)


JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_job_id(job_id: str) -> str:
    """A job id names directories: one safe path component, never '..' or a slash."""
    if not JOB_ID.fullmatch(job_id) or ".." in job_id:
        raise ValueError(f"job id {job_id!r} is not allowed: use letters, digits, '.', '_' and '-' "
                         "(at most 128, starting with a letter or digit)")
    return job_id


DEFAULT_PARTITION_SIZE = 1000
DEFAULT_MAX_PARTITION_MB = 256.0


class Recipe(Strict):
    """A validated recipe. `process` keeps DataJuicer's `[{op_name: {args}}]` shape."""

    project_name: Optional[str] = None
    dataset_path: str
    export_path: Optional[str] = None
    work_dir: str = DEFAULT_WORK_DIR
    job_id: Optional[str] = None
    executor_type: Literal["default", "local", "ray", "ray_partitioned"] = "default"
    ray_address: Optional[str] = None
    np: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    text_keys: str | list[str] = "text"
    process: list[dict[str, Optional[dict[str, Any]]]]
    malformed_records: Literal["reject", "fail"] = "reject"
    export_stats: bool = False
    models_dir: Optional[str] = None  # where model-based ops look first (local or s3://); see docs/models.md
    # DataJuicer's global keys implemented here (the rest: djkeys.IGNORED / MAPPED).
    keep_stats_in_res_ds: bool = False
    suffixes: list[str] = Field(default_factory=list)
    export_shard_size: int = Field(0, ge=0)
    custom_operator_paths: list[str] = Field(default_factory=list)
    # DataJuicer's tracer: {work_dir}/{job_id}/trace/*.jsonl (tracer.py)
    open_tracer: bool = False
    op_list_to_trace: list[str] = Field(default_factory=list)
    trace_num: int = Field(10, ge=0)
    trace_keys: list[str] = Field(default_factory=list)

    _compat_warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("suffixes", "custom_operator_paths", mode="before")
    @classmethod
    def _str_or_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else ([] if value is None else value)

    @property
    def compat_warnings(self) -> list[str]:
        """One message per DataJuicer key this recipe sets that has no effect here."""
        return list(self._compat_warnings)

    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    event_logging: EventLoggingConfig = Field(default_factory=EventLoggingConfig)
    event_log_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    intermediate_storage: IntermediateStorageConfig = Field(default_factory=IntermediateStorageConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    # Legacy flat keys (the fallback when the nested section leaves a value unset).
    partition_size: Optional[int] = Field(None, ge=1)
    max_partition_size_mb: Optional[float] = Field(None, gt=0)
    max_retries: Optional[int] = Field(None, ge=0)
    retry_backoff: Optional[Backoff] = None
    preserve_intermediate_data: Optional[bool] = None
    storage_format: Optional[Literal["parquet", "arrow", "jsonl"]] = None
    use_arrow_batches: Optional[bool] = None
    arrow_batch_size: Optional[int] = Field(None, ge=1)
    arrow_memory_mapping: Optional[bool] = None

    @model_validator(mode="after")
    def _paths(self) -> "Recipe":
        if self.export_path:
            export_format(self.export_path)
        if self.job_id is not None:
            check_job_id(self.job_id)
        return self

    @model_validator(mode="after")
    def _process_shape(self) -> "Recipe":
        if not self.process:
            raise ValueError("process: the recipe has no ops; add at least one op such as `- text_length_filter: {}`")
        for i, entry in enumerate(self.process):
            if len(entry) != 1:
                raise ValueError(f"process[{i}]: each entry must be a single {{op_name: {{args}}}} mapping, got keys {sorted(entry)}")
        return self

    # Resolved settings: nested section first, then the legacy flat key, then the default.
    @property
    def text_key(self) -> str:
        return self.text_keys if isinstance(self.text_keys, str) else self.text_keys[0]

    @property
    def partition_rows(self) -> int:
        return _first(self.partition.size, self.partition_size, DEFAULT_PARTITION_SIZE)

    @property
    def partition_max_mb(self) -> float:
        return _first(self.partition.max_size_mb, self.max_partition_size_mb, DEFAULT_MAX_PARTITION_MB)

    @property
    def retries(self) -> int:
        return _first(self.retry.max_retries, self.partition.max_retries, self.max_retries, 3)

    @property
    def backoff(self) -> str:
        return _first(self.retry.retry_backoff, self.partition.retry_backoff, self.retry_backoff, "exponential")

    @property
    def intermediate_format(self) -> str:
        return _first(self.intermediate_storage.format, self.storage_format, "parquet")

    @property
    def preserve_intermediate(self) -> bool:
        return _first(self.intermediate_storage.preserve_intermediate_data, self.preserve_intermediate_data, False)

    @property
    def arrow_batch_rows(self) -> Optional[int]:
        """Rows per op call with use_arrow_batches; None: an op sees its whole partition at once."""
        if not _first(self.intermediate_storage.use_arrow_batches, self.use_arrow_batches, False):
            return None
        return _first(self.intermediate_storage.arrow_batch_size, self.arrow_batch_size, 500)

    @property
    def memory_map_arrow(self) -> bool:
        return _first(self.intermediate_storage.arrow_memory_mapping, self.arrow_memory_mapping, False)

    @property
    def is_ray(self) -> bool:
        return self.executor_type in ("ray", "ray_partitioned")

    @property
    def ops(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, dict(args or {})) for entry in self.process for name, args in entry.items()]


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def parse_overrides(argv: list[str]) -> dict[str, Any]:
    """`--a.b value` / `--a.b=value` pairs into a nested mapping; values parsed as YAML scalars.

    A comma list becomes a YAML list for list-typed keys (`--checkpoint.op_names a,b`)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise RecipeError(f"unexpected argument {token!r}; overrides look like --section.key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise RecipeError(f"override --{key} has no value")
            value, i = argv[i + 1], i + 1
        i += 1
        parsed = yaml_load(value) if value != "" else ""
        if key.endswith("op_names") and isinstance(parsed, str):
            parsed = [v.strip() for v in parsed.split(",") if v.strip()]
        node = out
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = parsed
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | os.PathLike[str] | None, overrides: dict[str, Any] | None = None,
                raw: dict[str, Any] | None = None, check_ops: bool = True) -> Recipe:
    """Read, merge overrides, validate; every problem becomes one RecipeError naming the key.

    check_ops=False skips building the ops (the compatibility report classifies them itself)."""
    if raw is None:
        if path is None:
            raise RecipeError("no recipe given; pass --config path/to/recipe.yaml")
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe file {str(p)!r} does not exist; check the --config path")
        try:
            raw = yaml_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {str(p)!r} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"recipe {str(p)!r} must be a mapping of settings, got {type(raw).__name__}")
    data = deep_merge(raw, overrides or {})
    sections = {name: set(Recipe.model_fields[name].annotation.model_fields) for name in SECTIONS}
    data, warnings = normalize(data, set(Recipe.model_fields), sections)
    try:
        recipe = Recipe(**data)
    except ValidationError as err:
        raise RecipeError(describe(err)) from None
    recipe._compat_warnings = warnings + untraced_names(recipe)
    if recipe.custom_operator_paths:
        from .custom_ops import load_custom_operators
        load_custom_operators(recipe.custom_operator_paths)
    if check_ops:
        validate_ops(recipe)
    return recipe


def untraced_names(recipe: Recipe) -> list[str]:
    """op_list_to_trace names no op of the recipe uses (a typo traces nothing, silently in DataJuicer)."""
    used = {name for entry in recipe.process for name in entry}
    unused = [name for name in recipe.op_list_to_trace if name not in used]
    if not recipe.open_tracer or not unused:
        return []
    return [f"op_list_to_trace names {', '.join(map(repr, unused))}, which this recipe's process list does not "
            "use: nothing is traced for them"]


def validate_ops(recipe: Recipe) -> None:
    """Build every op once so a bad op or parameter fails before any work starts."""
    from .ops import build_op

    refuse_media_ops(recipe)
    build_ops(recipe, build_op)
    names = {name for name, _ in recipe.ops}
    missing = [n for n in recipe.checkpoint.op_names if n not in names]
    if recipe.checkpoint.effective == Strategy.manual and missing:
        raise RecipeError(f"checkpoint.op_names: {missing} are not ops of this recipe; choose from {sorted(names)}")


def refuse_media_ops(recipe: Recipe) -> None:
    """An image/video/audio recipe fails here, naming every such op at once, not the first one."""
    from .djcatalog import MEDIA, datajuicer_ops
    from .ops import registered_ops
    from .ops.dj_adapter import datajuicer_registry

    catalogue, native = datajuicer_ops(), registered_ops()
    media = [name for name, _ in recipe.ops if name not in native and catalogue.get(name, {}).get("modality") in MEDIA]
    registry = datajuicer_registry() if media else None  # importing DataJuicer takes seconds: only when needed
    if registry is not None:
        media = [name for name in media if name not in registry.modules]
    if media:
        raise RecipeError(f"process: this engine processes text; the recipe uses DataJuicer's image/video/audio ops "
                          f"{list(dict.fromkeys(media))}, which are not native here. Install the DataJuicer extra "
                          "(pip install 'datajuicer-ft[datajuicer]') and those ops' own dependencies to run them "
                          "through the adapter, or remove them from the recipe")


def build_ops(recipe: Recipe, build_op: Any = None) -> list[Any]:
    if build_op is None:
        from .ops import build_op
    from .models import search_context
    from .storage import StorageOptions

    ops, problems = [], []
    with search_context(recipe.models_dir, StorageOptions.from_recipe(recipe)):
        for i, (name, args) in enumerate(recipe.ops):
            args = dict(args)
            if "text_key" not in args and recipe.text_key != "text":
                args["text_key"] = recipe.text_key
            try:
                ops.append(build_op(name, args, where=f"process[{i}]"))
            except RecipeError as err:  # go on: one run of the recipe names every op to fix
                problems.append(str(err))
    if len(problems) == 1:
        raise RecipeError(problems[0])
    if problems:
        raise RecipeError(f"{len(problems)} ops cannot run:\n" + "\n".join(f"- {p}" for p in problems))
    return ops


def describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join(loc) or "recipe"
        if e["type"] == "extra_forbidden":
            model: type[BaseModel] = Recipe
            for part in loc[:-1]:
                field = model.model_fields.get(part)
                inner = getattr(field, "annotation", None) if field else None
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    model = inner
            known = list(model.model_fields)
            prefix = ".".join(loc[:-1])
            known += [k.rsplit(".", 1)[-1] for k in DJ_TYPES if k.rpartition(".")[0] == prefix]
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            tip = f" (did you mean {'.'.join(loc[:-1] + [hint[0]])!r}?)" if hint else ""
            parts.append(f"unknown key {key!r}{tip}")
        elif e["type"] == "missing":
            parts.append(f"missing required key {key!r}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"{key}: {msg} (got {e.get('input')!r})" if e["type"] != "value_error" else f"{key}: {msg}")
    return "invalid recipe: " + "; ".join(parts)
