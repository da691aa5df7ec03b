"""Model files for the model-based ops: where they are looked for, and one load per process.

The places are DataJuicer's, in its order, after the recipe's own `models_dir`:
  1. `models_dir` from the recipe (a local folder, or an s3:// prefix copied once to a
     local cache through the storage layer);
  2. the file name as a path, relative to the working directory;
  3. each folder of `DATA_JUICER_EXTERNAL_MODELS_HOME` (os.pathsep-separated);
  4. `DATA_JUICER_MODELS_CACHE` (default `~/.cache/data_juicer/models`, following
     `DATA_JUICER_CACHE_HOME` and `CACHE_HOME` as DataJuicer does);
  5. for a Hugging Face tokenizer only, the Hugging Face hub cache (a snapshot already there).
DataJuicer downloads what it cannot find; this engine never does, so a missing file is a
RecipeError raised while the recipe is validated, naming the file and every place tried.

Resolution happens on the driver and is stored in the op; loading happens in the worker
that runs the op, once per process (`load`), never once per partition."""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional

from .storage import Storage, StorageOptions, is_remote, temp_path

Kind = Literal["fasttext", "kenlm", "sentencepiece", "hf_tokenizer"]

# What each kind is, for messages; and the package that loads it (the `models` extra).
KIND_NAMES: dict[str, tuple[str, str]] = {
    "fasttext": ("fastText language-id model", "fasttext"),
    "kenlm": ("KenLM language model", "kenlm"),
    "sentencepiece": ("SentencePiece model", "sentencepiece"),
    "hf_tokenizer": ("Hugging Face tokenizer directory (with tokenizer.json)", "tokenizers"),
}

FASTTEXT_LID = "lid.176.bin"
DEFAULT_HF_TOKENIZER = "EleutherAI/pythia-6.9b-deduped"


def kenlm_file(lang: str) -> str:
    return f"{lang}.arpa.bin"


def sentencepiece_file(lang: str) -> str:
    return f"{lang}.sp.model"


@dataclass(frozen=True)
class ModelFile:
    """One file (or tokenizer directory) an op needs, under DataJuicer's name for it."""

    kind: Kind
    name: str

    def describe(self) -> str:
        return f"{KIND_NAMES[self.kind][0]} {self.name!r}"


@dataclass(frozen=True)
class ModelLocation:
    """Where a model was found: a local path, or a remote object/prefix and its local copy."""

    kind: Kind
    name: str
    path: str  # local path, or the s3:// uri to copy from
    cache: Optional[str] = None  # for a remote path: the local copy
    storage: StorageOptions = StorageOptions()

    def local(self) -> str:
        """A local path to load, copying a remote model into the cache the first time."""
        if self.cache is None:
            return self.path
        if not os.path.exists(self.cache):
            copy_remote(Storage(self.storage), self.path, self.cache)
        return self.cache


@dataclass(frozen=True)
class SearchContext:
    models_dir: Optional[str] = None
    storage: StorageOptions = StorageOptions()


_context: contextvars.ContextVar[SearchContext] = contextvars.ContextVar("dj_models", default=SearchContext())


@contextlib.contextmanager
def search_context(models_dir: Optional[str], storage: StorageOptions | None = None) -> Iterator[None]:
    """Ops built inside this block look for their models in `models_dir` first (the recipe key)."""
    token = _context.set(SearchContext(models_dir, storage or StorageOptions()))
    try:
        yield
    finally:
        _context.reset(token)


def dj_models_cache(env: Optional[dict[str, str]] = None) -> str:
    """DataJuicer's models cache folder, computed from the same variables DataJuicer reads."""
    env = os.environ if env is None else env
    if env.get("DATA_JUICER_MODELS_CACHE"):
        return os.path.expanduser(env["DATA_JUICER_MODELS_CACHE"])
    cache_home = env.get("CACHE_HOME", "~/.cache")
    dj_home = os.path.expanduser(env.get("DATA_JUICER_CACHE_HOME", os.path.join(cache_home, "data_juicer")))
    return os.path.join(dj_home, "models")


def hf_hub_snapshots(name: str, env: Optional[dict[str, str]] = None) -> list[str]:
    """Snapshot folders of `name` already in the Hugging Face hub cache (newest first)."""
    env = os.environ if env is None else env
    hub = env.get("HF_HUB_CACHE") or os.path.join(
        os.path.expanduser(env.get("HF_HOME", "~/.cache/huggingface")), "hub")
    snapshots = Path(hub) / f"models--{name.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return [str(snapshots / "<revision>")]
    return [str(p) for p in sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)]


def candidates(model: ModelFile, models_dir: Optional[str],
               env: Optional[dict[str, str]] = None) -> list[tuple[str, str]]:
    """Every place `model` is looked for, in order, as (what the place is, path or uri)."""
    env = os.environ if env is None else env
    places = []
    if models_dir:
        places.append(("models_dir", _join(models_dir, model.name)))
    places.append(("working directory", os.path.abspath(os.path.expanduser(model.name))))
    for folder in env.get("DATA_JUICER_EXTERNAL_MODELS_HOME", "").split(os.pathsep):
        if folder.strip():
            places.append(("DATA_JUICER_EXTERNAL_MODELS_HOME",
                           os.path.join(os.path.expanduser(folder.strip()), model.name)))
    places.append(("DATA_JUICER_MODELS_CACHE", os.path.join(dj_models_cache(env), model.name)))
    if model.kind == "hf_tokenizer":
        places += [("Hugging Face hub cache", p) for p in hf_hub_snapshots(model.name, env)]
    seen: set[str] = set()
    return [(label, path) for label, path in places if not (path in seen or seen.add(path))]


def _join(base: str, name: str) -> str:
    if is_remote(base):
        return base.rstrip("/") + "/" + name
    return os.path.join(os.path.abspath(os.path.expanduser(base)), name)


def _usable(model: ModelFile, path: str) -> bool:
    if model.kind == "hf_tokenizer":
        return os.path.isfile(os.path.join(path, "tokenizer.json"))
    return os.path.isfile(path)


def resolve(model: ModelFile, models_dir: Optional[str] = None, storage: StorageOptions | None = None,
            env: Optional[dict[str, str]] = None) -> ModelLocation:
    """The first place that holds `model`, or a ValueError naming the file and every place tried."""
    ctx = _context.get()
    models_dir = models_dir if models_dir is not None else ctx.models_dir
    storage = storage or ctx.storage
    places = candidates(model, models_dir, env)
    for _, place in places:
        if is_remote(place):
            remote = Storage(storage)
            probe = place + "/tokenizer.json" if model.kind == "hf_tokenizer" else place
            if remote.exists(probe):
                return ModelLocation(model.kind, model.name, place, remote_cache(place, env), storage)
        elif _usable(model, place):
            return ModelLocation(model.kind, model.name, place)
    what = "a folder with tokenizer.json" if model.kind == "hf_tokenizer" else "the file"
    raise MissingModel(f"{model.describe()} not found; looked for {what} in: "
                       + "; ".join(f"{path} ({label})" for label, path in places))


class MissingModel(ValueError):
    """A model file is in none of the places searched; `what` names it and the places."""

    ADVICE = ("this engine never downloads models: put the file in one of these places, or set the recipe key"
              " `models_dir` (a local folder or an s3:// prefix) to the folder that holds it")

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"{what}. {self.ADVICE[0].upper()}{self.ADVICE[1:]}")


def remote_cache(uri: str, env: Optional[dict[str, str]] = None) -> str:
    """The local copy of a remote model: one folder per uri under the datajuicer-ft cache."""
    env = os.environ if env is None else env
    root = os.path.expanduser(env.get("XDG_CACHE_HOME", "~/.cache"))
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return os.path.join(root, "datajuicer-ft", "models", digest, uri.rstrip("/").rsplit("/", 1)[-1])


def copy_remote(storage: Storage, uri: str, local: str) -> None:
    """Copy a remote file, or every file under a remote prefix, to `local`; atomic per file
    and for the whole (a folder is renamed into place last), so a killed copy is redone."""
    files = [uri] if storage.exists(uri) and not storage.find(uri + "/") else storage.find(uri + "/")
    staging = temp_path(local)
    for src in files:
        rel = os.path.relpath("/" + src.split("://", 1)[-1], "/" + uri.split("://", 1)[-1])
        dst = staging if rel == "." else os.path.join(staging, rel)
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        with storage.open(src, "rb") as fin, open(dst, "wb") as fout:
            while chunk := fin.read(1 << 22):
                fout.write(chunk)
    try:
        os.replace(staging, local)
    except OSError:  # another process won the race for a folder: use its copy
        if not os.path.exists(local):
            raise


# One loaded model per (kind, local path) per process.
_loaded: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def load(location: ModelLocation) -> Any:
    """The model at `location`, loaded once in this process and reused by every partition."""
    key = (location.kind, location.path)
    model = _loaded.get(key)
    if model is None:
        with _lock:
            model = _loaded.get(key)
            if model is None:
                model = _loaded[key] = LOADERS[location.kind](location.local())
    return model


def _import(kind: str) -> Any:
    module = KIND_NAMES[kind][1]
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"loading a {KIND_NAMES[kind][0]} needs the Python package {module!r}; "
            "install the engine with its models extra: pip install 'datajuicer-ft[models]'"
        ) from None


class FastTextModel:
    """fastText's predict through its C++ binding: fasttext 0.9.3's Python wrapper builds its
    result with np.array(copy=False), which NumPy 2 refuses."""

    def __init__(self, path: str):
        fasttext = _import("fasttext")
        self.model = fasttext.load_model(path)

    def predict(self, text: str) -> tuple[str, float]:
        """The top label (without __label__) and its probability, as DataJuicer reads them."""
        if "\n" in text:
            raise ValueError("fastText predicts one line at a time: remove '\\n' from the text first")
        predictions = self.model.f.predict(text + "\n", 1, 0.0, "strict")
        if not predictions:  # DataJuicer indexes the empty result and fails the same way
            raise IndexError(f"fastText gave no prediction for {text[:80]!r}")
        prob, label = predictions[0]
        return label.replace("__label__", ""), prob


class HFTokenizer:
    """A Hugging Face fast tokenizer's tokenize(): its token strings, no special tokens added."""

    def __init__(self, path: str):
        tokenizers = _import("hf_tokenizer")
        self.tokenizer = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))

    def tokenize(self, text: str) -> list[str]:
        return self.tokenizer.encode(text, add_special_tokens=False).tokens


def _sentencepiece(path: str) -> Any:
    sp = _import("sentencepiece").SentencePieceProcessor()
    sp.load(path)
    return sp


LOADERS: dict[str, Callable[[str], Any]] = {
    "fasttext": FastTextModel,
    "kenlm": lambda path: _import("kenlm").Model(path),
    "sentencepiece": _sentencepiece,
    "hf_tokenizer": HFTokenizer,
}
