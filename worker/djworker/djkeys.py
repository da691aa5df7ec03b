"""DataJuicer's global recipe keys: which ones this engine implements, and which it accepts
without effect (and why).

A recipe written for DataJuicer 1.6.1 must load here unchanged. Every global key DataJuicer's
config parser knows is therefore either a Recipe field (implemented), mapped onto one
(`dataset:`, `export_aws_credentials`, `resume`, `debug`), or accepted with a reason
(`IGNORED`), which the job reports once as a WARNING event. Values are type-checked as
DataJuicer's parser checks them (`DJ_TYPES`, coerced like jsonargparse: "4" is 4), so a
typo in a value is still an error. A key DataJuicer does not know stays an error.

YAML is read as jsonargparse reads it: `5e5` is the float 500000.0 (PyYAML alone reads it as
a string), and timestamps stay strings.

Over 300 lines because it is a table: one entry per DataJuicer global key, kept together so
the compatibility report and the loader cannot drift apart."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError

from .errors import RecipeError

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
ClosedUnitInterval = Annotated[float, Field(ge=0, le=1)]
StrOrList = Union[str, list[str]]
AutoOrPositive = Union[PositiveInt, Literal["auto"]]

# Every global key of DataJuicer 1.6.1's parser (data_juicer/config/config.py, build_base_parser)
# with the type it validates against. Dotted names live in a nested section.
DJ_TYPES: dict[str, Any] = {
    "config": Any, "auto": bool, "auto_num": PositiveInt, "hpo_config": Optional[str],
    "data_probe_algo": str, "data_probe_ratio": ClosedUnitInterval, "load_jsonl_lenient": bool,
    "use_dag": Optional[bool], "project_name": str, "executor_type": str, "strict_preflight": bool,
    "dataset_path": str, "dataset": Union[list[dict], dict], "generated_dataset_config": Optional[dict],
    "validators": list[dict], "load_dataset_kwargs": dict, "read_options": dict,
    "override_num_blocks": Optional[PositiveInt], "work_dir": Optional[str], "export_path": str,
    "export_type": Optional[str], "export_shard_size": NonNegativeInt, "export_in_parallel": bool,
    "export_extra_args": dict, "export_aws_credentials": Optional[dict], "decrypt_after_reading": bool,
    "encrypt_before_export": bool, "encryption_key_path": Optional[str], "keep_stats_in_res_ds": bool,
    "keep_hashes_in_res_ds": bool, "np": PositiveInt, "text_keys": StrOrList, "image_key": str,
    "image_bytes_key": str, "image_special_token": str, "audio_key": str, "audio_special_token": str,
    "video_key": str, "video_special_token": str, "eoc_special_token": str, "suffixes": StrOrList,
    "turbo": bool, "skip_op_error": bool, "use_cache": bool, "ds_cache_dir": Optional[str],
    "cache_compress": Optional[str], "open_monitor": bool, "use_checkpoint": bool,
    "checkpoint.enabled": bool, "checkpoint.strategy": str, "checkpoint.n_ops": PositiveInt,
    "checkpoint.op_names": list[str], "event_logging.enabled": bool, "event_log_dir": Optional[str],
    "checkpoint_dir": Optional[str], "job_id": Optional[str], "resume": Optional[str],
    "temp_dir": Optional[str], "open_tracer": bool, "op_list_to_trace": list[str], "trace_num": int,
    "trace_keys": list[str], "open_insight_mining": bool, "op_list_to_mine": list[str],
    "min_common_dep_num_to_combine": int, "conflict_resolve_strategy": str, "op_fusion": bool,
    "fusion_strategy": str, "mapper_fusion": bool, "mapper_fusion_vram_limit": float,
    "adaptive_batch_size": bool, "process": list[dict], "percentiles": list[float],
    "export_original_dataset": bool, "save_stats_in_one_file": bool, "ray_address": Optional[str],
    "partition_size": Optional[PositiveInt], "partition.mode": str, "partition.size": Optional[PositiveInt],
    "partition.num_of_partitions": Optional[AutoOrPositive], "partition.partitions_per_node": AutoOrPositive,
    "partition.max_concurrent_partitions": AutoOrPositive, "partition.max_gpu_workers_per_device": PositiveInt,
    "partition.max_concurrent_gpu_probes": AutoOrPositive, "partition.gpu_preflight_enabled": bool,
    "partition.gpu_probe_timeout_seconds": Optional[float], "partition.gpu_probe_warmup_batches": NonNegativeInt,
    "partition.gpu_probe_steady_batches": PositiveInt, "partition.gpu_probe_sample_offset": NonNegativeInt,
    "partition.gpu_probe_sample_shuffle": bool, "partition.gpu_probe_sample_seed": Optional[int],
    "partition.execution_group_size": AutoOrPositive, "partition.max_initialization_overhead_ratio": float,
    "partition.target_size_mb": int, "partition_dir": Optional[str], "custom_operator_paths": Optional[StrOrList],
    "elastic_juicer_adaptive_batching": bool, "debug": bool, "elastic_juicer_profile_seed": bool,
    "auto_op_parallelism": bool,
}

_ANALYZER = "it configures DataJuicer's analyzer, sandbox or HPO tools; dj-process only processes"
_MEDIA = "this engine processes text only; multimodal recipes are refused by their ops"
_CACHE = "checkpoints replace the Hugging Face datasets cache: every op's output is checkpointed and reused on resume"
_SPEED = "ops run in recipe order on Arrow batches across partitions; this setting changes DataJuicer's speed, not its results"
_RAY_READ = "input is read by the engine's own JSONL/Parquet reader, not Ray Data or Hugging Face datasets"
_GPU = "it tunes DataJuicer's GPU scheduling; partitions here are sized by partition.size / partition.max_size_mb"

# Keys accepted without effect, with the reason the job reports.
IGNORED: dict[str, str] = {
    "config": "it names a recipe file on DataJuicer's command line; pass --config to dj-process",
    "auto": _ANALYZER, "auto_num": _ANALYZER, "hpo_config": _ANALYZER, "data_probe_algo": _ANALYZER,
    "data_probe_ratio": _ANALYZER, "percentiles": _ANALYZER, "export_original_dataset": _ANALYZER,
    "save_stats_in_one_file": _ANALYZER, "open_insight_mining": _ANALYZER, "op_list_to_mine": _ANALYZER,
    "load_jsonl_lenient": "malformed input lines are always counted and written to rejects (see malformed_records)",
    "use_dag": "the plan and per-partition progress are always in the event log and dj-monitor",
    "strict_preflight": "the whole recipe is always validated before any work starts",
    "validators": "input records are checked for a text field while partitions are planned; other validators do not run",
    "load_dataset_kwargs": _RAY_READ, "read_options": _RAY_READ, "override_num_blocks": _RAY_READ,
    "export_in_parallel": "workers always encode export shards in parallel; the driver concatenates them",
    "export_extra_args": "the JSONL and Parquet exporters here take no extra arguments",
    "keep_hashes_in_res_ds": "deduplicator hashes are computed in the dedup stage and never stored in rows",
    "image_key": _MEDIA, "image_bytes_key": _MEDIA, "image_special_token": _MEDIA, "audio_key": _MEDIA,
    "audio_special_token": _MEDIA, "video_key": _MEDIA, "video_special_token": _MEDIA, "eoc_special_token": _MEDIA,
    "turbo": _SPEED, "op_fusion": _SPEED, "fusion_strategy": _SPEED, "mapper_fusion": _SPEED,
    "mapper_fusion_vram_limit": _SPEED, "adaptive_batch_size": _SPEED, "auto_op_parallelism": _SPEED,
    "elastic_juicer_adaptive_batching": _SPEED, "elastic_juicer_profile_seed": _SPEED,
    "skip_op_error": "a failing partition is retried and then fails the job; rows are never skipped silently",
    "use_cache": _CACHE, "ds_cache_dir": _CACHE, "cache_compress": _CACHE, "temp_dir": _CACHE,
    "use_checkpoint": "checkpointing is always on here; tune it with the checkpoint section",
    "open_monitor": "RESOURCE_USAGE events and dj-monitor report resource use",
    "min_common_dep_num_to_combine": "ops here share one environment; DataJuicer's per-op Ray environments do not apply",
    "conflict_resolve_strategy": "ops here share one environment; DataJuicer's per-op Ray environments do not apply",
    "partition.mode": "partitions are always sized by partition.size / partition.max_size_mb",
    "partition.num_of_partitions": "partitions are always sized by partition.size / partition.max_size_mb",
    "partition.partitions_per_node": "partitions are always sized by partition.size / partition.max_size_mb",
    "partition.max_concurrent_partitions": "np sets how many partitions run at once",
    "partition.max_gpu_workers_per_device": _GPU, "partition.max_concurrent_gpu_probes": _GPU,
    "partition.gpu_preflight_enabled": _GPU, "partition.gpu_probe_timeout_seconds": _GPU,
    "partition.gpu_probe_warmup_batches": _GPU, "partition.gpu_probe_steady_batches": _GPU,
    "partition.gpu_probe_sample_offset": _GPU, "partition.gpu_probe_sample_shuffle": _GPU,
    "partition.gpu_probe_sample_seed": _GPU, "partition.execution_group_size": _GPU,
    "partition.max_initialization_overhead_ratio": _GPU,
    "partition.target_size_mb": "use partition.max_size_mb, this engine's size bound per partition",
    "partition_dir": "partition metadata is written under the job's work directory",
}

# Notes on implemented keys whose effect differs in detail from DataJuicer's (compatibility report).
_TRACE = "see docs/tracer.md"
NOTES: dict[str, str] = {
    "open_tracer": "writes DataJuicer's trace files into {work_dir}/{job_id}/trace/; " + _TRACE,
    "op_list_to_trace": _TRACE,
    "trace_num": "the first trace_num samples in input order, per op; " + _TRACE, "trace_keys": _TRACE,
}

# Keys refused when they ask for something this engine would otherwise silently not do.
REFUSED: dict[str, tuple[Any, str]] = {
    "generated_dataset_config": (None, "generating the input dataset is not supported; write it to a JSONL or "
                                       "Parquet file and set dataset_path"),
    "decrypt_after_reading": (False, "encrypted input is not supported; decrypt it first, then set dataset_path "
                                     "to the plain JSONL or Parquet files"),
    "encrypt_before_export": (False, "encrypted export is not supported; the result would be written in plain text. "
                                     "Remove the key, or encrypt the export afterwards"),
    "encryption_key_path": (None, "encryption is not supported (see encrypt_before_export)"),
}

# Keys that map onto this engine's own settings (handled in normalize()).
MAPPED: dict[str, str] = {
    "dataset": "dataset_path (one local or S3 dataset) and storage.s3 credentials",
    "export_aws_credentials": "storage.s3 credentials",
    "resume": "job_id (resumes that job)",
    "debug": "event_logging.debug",
    "export_type": "checked against export_path's suffix",
}

SECTIONS = ("checkpoint", "event_logging", "partition")


class _JsonargparseLoader(yaml.SafeLoader):
    """YAML 1.2 floats (`5e5`, `1e-3`) and no timestamps, as DataJuicer's parser reads recipes."""


for _first, _mappings in list(_JsonargparseLoader.yaml_implicit_resolvers.items()):
    _JsonargparseLoader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _mappings if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")]
_JsonargparseLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_JsonargparseLoader)  # noqa: S506 - a SafeLoader subclass


def dj_keys() -> list[str]:
    return list(DJ_TYPES)


def coerce(key: str, value: Any) -> Any:
    """The value as DataJuicer's parser would accept it, or a RecipeError naming the key."""
    try:
        return TypeAdapter(DJ_TYPES[key]).validate_python(value)
    except ValidationError as err:
        msg = "; ".join(e["msg"] for e in err.errors()[:2])
        raise RecipeError(f"invalid recipe: {key}: {msg} (got {value!r})") from None


def normalize(raw: dict[str, Any], native: set[str], native_sections: dict[str, set[str]]
              ) -> tuple[dict[str, Any], list[str]]:
    """DataJuicer's keys turned into this engine's: returns the mapping to validate and one
    warning per key accepted without effect. `native` names the Recipe's own top-level fields,
    `native_sections` the fields of its nested sections; anything else DataJuicer does not know
    is left in place for validation to refuse by name."""
    data = dict(raw)
    warnings: list[str] = []

    def ignore(key: str, value: Any) -> None:
        coerce(key, value)
        warnings.append(f"recipe key {key!r} ({value!r}) has no effect here: {IGNORED[key]}")

    for key in list(data):
        if key in native or key in MAPPED or key in SECTIONS:
            continue
        if key in IGNORED:
            ignore(key, data.pop(key))
        elif key in REFUSED:
            value = coerce(key, data.pop(key))
            harmless, why = REFUSED[key]
            if value != harmless:
                raise RecipeError(f"invalid recipe: {key}: {why} (got {value!r})")
    for section in SECTIONS:
        body = data.get(section)
        if not isinstance(body, dict):
            continue
        body = dict(body)
        for sub in list(body):
            dotted = f"{section}.{sub}"
            if sub in native_sections.get(section, set()):
                continue
            if dotted in IGNORED:
                ignore(dotted, body.pop(sub))
        data[section] = body
    if "debug" in data:
        if coerce("debug", data.pop("debug")):
            data["event_logging"] = {**data.get("event_logging", {}), "debug": True}
    if "resume" in data:
        job = coerce("resume", data.pop("resume"))
        if job and data.get("job_id") not in (None, job):
            raise RecipeError(f"invalid recipe: resume {job!r} and job_id {data['job_id']!r} name different jobs; "
                              "keep one")
        if job:
            data["job_id"] = job
    if "export_type" in data:
        _check_export_type(coerce("export_type", data.pop("export_type")), data.get("export_path"))
    creds: list[tuple[str, dict[str, Any]]] = []
    if "dataset" in data:
        dataset = coerce("dataset", data.pop("dataset"))
        if data.get("dataset_path"):  # DataJuicer's priority: dataset_path, then dataset
            warnings.append(f"recipe key 'dataset' has no effect here: dataset_path ({data['dataset_path']!r}) "
                            "takes priority over it, as in DataJuicer")
        else:
            path, cred = dataset_path_of(dataset)
            data["dataset_path"] = path
            if cred:
                creds.append(("dataset", cred))
    if "export_aws_credentials" in data:
        cred = coerce("export_aws_credentials", data.pop("export_aws_credentials"))
        if cred:
            creds.append(("export_aws_credentials", cred))
    if creds:
        data["storage"] = _with_s3_credentials(data.get("storage") or {}, creds)
    return data, warnings


def export_format(export_path: str) -> str:
    """The export's format, from its suffix: jsonl (also .json, gzipped or not) or parquet."""
    p = export_path.lower()
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
        return "jsonl"
    raise ValueError(f"export_path {export_path!r}: use a .jsonl, .jsonl.gz or .parquet file name")


def _check_export_type(export_type: Optional[str], export_path: Any) -> None:
    if not export_type or not isinstance(export_path, str):
        return
    kind = {"json": "jsonl", "jsonl": "jsonl", "parquet": "parquet"}.get(export_type.lower())
    if kind is None:
        raise RecipeError(f"invalid recipe: export_type {export_type!r} is not supported; use jsonl or parquet")
    try:
        actual = export_format(export_path)
    except ValueError:
        return  # the export_path check reports it
    if actual != kind:
        raise RecipeError(f"invalid recipe: export_type {export_type!r} disagrees with export_path {export_path!r}; "
                          f"name the export with a .{kind} suffix or drop export_type")


_S3_CRED_KEYS = {"aws_access_key_id": "key", "aws_secret_access_key": "secret", "aws_session_token": "token",
                 "aws_region": "region", "endpoint_url": "endpoint_url"}


def dataset_path_of(dataset: Any) -> tuple[str, dict[str, Any]]:
    """DataJuicer's `dataset:` block as one dataset path (plus its S3 credentials).

    One local or S3 source maps onto dataset_path. Mixing several sources by weight,
    sampling (max_sample_num) and remote hubs are refused, so a job never processes a
    different dataset than the recipe asked for."""
    configs = dataset if isinstance(dataset, list) else (dataset.get("configs") or [])
    extra = sorted(set(dataset) - {"configs", "max_sample_num"}) if isinstance(dataset, dict) else []
    if extra:
        raise RecipeError(f"invalid recipe: dataset: unknown key(s) {extra}; DataJuicer's dataset block has "
                          "'configs' and 'max_sample_num'")
    if isinstance(dataset, dict) and dataset.get("max_sample_num") is not None:
        raise RecipeError("invalid recipe: dataset.max_sample_num: sampling the input is not supported; "
                          "remove it to process the whole dataset, or sample the files beforehand")
    if len(configs) != 1:
        raise RecipeError(f"invalid recipe: dataset.configs: {len(configs)} sources given; this engine reads one "
                          "dataset (a file, a directory or a glob): list exactly one source, or set dataset_path")
    cfg = dict(configs[0])
    kind, source = cfg.pop("type", None), cfg.pop("source", None)
    where = "dataset.configs[0]"
    if cfg.pop("weight", 1.0) not in (1, 1.0):
        raise RecipeError(f"invalid recipe: {where}.weight: weighting one source samples it, which is not supported; "
                          "remove the weight")
    is_s3 = kind == "remote" and source == "s3" or kind == "s3"
    if kind != "local" and not is_s3:
        raise RecipeError(f"invalid recipe: {where}: source type {kind!r}" + (f" ({source!r})" if source else "")
                          + " is not supported; this engine reads local or S3 JSONL/Parquet: download the data "
                          "and point dataset_path (or a type 'local' source) at it")
    path = cfg.pop("path", None)
    if not isinstance(path, str) or not path:
        raise RecipeError(f"invalid recipe: {where}.path: a dataset source needs a path")
    if is_s3 and not path.startswith(("s3://", "s3a://")):
        raise RecipeError(f"invalid recipe: {where}.path {path!r}: an S3 source needs an s3:// path")
    cred = {k: cfg.pop(k) for k in list(cfg) if k in _S3_CRED_KEYS} if is_s3 else {}
    if cfg:
        raise RecipeError(f"invalid recipe: {where}: unknown key(s) {sorted(cfg)} for a {kind!r} source")
    return path, cred


def _with_s3_credentials(storage: dict[str, Any], creds: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Both S3 credential sets onto storage.s3: one filesystem serves input and export, so
    they must agree (or give only one)."""
    s3 = dict(storage.get("s3") or {})
    for where, cred in creds:
        for key, value in cred.items():
            if key not in _S3_CRED_KEYS:
                raise RecipeError(f"invalid recipe: {where}: unknown key {key!r}; use {sorted(_S3_CRED_KEYS)}")
            field = _S3_CRED_KEYS[key]
            if s3.get(field) not in (None, value):
                raise RecipeError(f"invalid recipe: {where}.{key} differs from another S3 setting ({field}); "
                                  "one job uses one set of S3 credentials for input and export")
            s3[field] = value
    return {**storage, "s3": s3}
