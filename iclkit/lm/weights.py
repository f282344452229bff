"""Resolving a model name to a local weights folder (the embedded default, a .gguf file, a folder, or a hub id),
and loading its tokenizer."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from iclkit import hub, resources
from iclkit.errors import IclkitError
from iclkit.files import atomic_write, file_sha256
from iclkit.lm.spec import ALIASES, EMBEDDED, ModelSpec
from iclkit.paths import cache_dir


def memo_sha256(path: Path) -> str:
    """sha256 of a file, memoized on disk by (path, size, mtime) so big weights are hashed once."""
    stat = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    table: dict[str, str] = {}
    if memo.is_file():
        try:
            table = json.loads(memo.read_text())
        except (OSError, ValueError):
            table = {}
    if key not in table:
        table[key] = file_sha256(path)
        atomic_write(memo, json.dumps(table))
    return table[key]


def weights_hash(folder: Path) -> str:
    """One hash over a model folder's weight files (names and contents)."""
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf"))
    if not files:
        raise IclkitError("no weight files (.safetensors/.bin) in model folder", file=str(folder))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{memo_sha256(p)}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def parsed_once() -> Iterator[None]:
    """Inside the block, the ``gguf`` package's file reader and tensor-name maps are built once per argument.

    ``transformers`` parses the GGUF file three times on one load (config, tokenizer, weights: ~3.5 s each for
    SmolLM2, most of it its 49k-token vocabulary) and builds a tensor-name map for every submodule of the model
    (~5.5 s in all), each the same; both are read-only, so one of each serves every call. In profiles of the default
    run's first conversion, parsing fell from 10.7 s to 4.4 s and the name maps from 5.8 s to nothing; a test checks
    that the converted weights, config and tokenizer are those of ``transformers``' own load of the file."""
    import gguf

    saved = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = functools.lru_cache(maxsize=None)(saved[0])  # type: ignore[misc]
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(saved[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = saved


def gguf_to_folder(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder under the iclkit cache (reloads in ~0.1 s)."""
    digest = memo_sha256(gguf)
    target = cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"iclkit: converting {gguf.name} to safetensors (once) ...", flush=True)
    with parsed_once():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model.hf_quantizer = None  # the weights are now plain fp32: save them as such
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=target.name + ".tmp"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "iclkit_source.json").write_text(json.dumps({"gguf": gguf.name, "gguf_sha256": digest}))
        os.replace(tmp, target)
    except FileExistsError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def resolve(spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """Local folder holding the weights, and the provenance to record."""
    name = ALIASES.get(spec.name, spec.name)
    if name == EMBEDDED:
        gguf = resources.ensure(resources.SMOLLM2_GGUF)
        return gguf_to_folder(gguf), {"source": resources.SMOLLM2_GGUF.requirement, "file": gguf.name,
                                      "file_sha256": resources.SMOLLM2_GGUF.sha256}
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise IclkitError("no such GGUF file", file=str(path))
        return gguf_to_folder(path), {"source": "gguf", "file": str(path), "file_sha256": memo_sha256(path)}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise IclkitError("model folder has no config.json", file=str(path))
        return path, {"source": "folder"}
    if name.startswith((".", "/", "~")):
        raise IclkitError("no such model folder or file", file=name)
    return from_hub(name, spec.revision), {"source": "hub"}


def from_hub(repo_id: str, revision: str | None = None) -> Path:
    """Local snapshot of a hub repository's config, tokenizer and safetensors files (the cache when offline)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    online = hub.reachable()
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                      local_files_only=not online))
    except Exception as e:  # noqa: BLE001 - hub errors come in many types
        why = "the hub cannot be reached and it is not in the local cache" if not online else f"{type(e).__name__}: {e}"
        raise IclkitError(
            f"model {repo_id!r} cannot be loaded: {why}".splitlines()[0], field="model",
            hint=f"offline alternatives: the embedded default ({EMBEDDED}), a local model folder, or a .gguf file",
        ) from None


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(folder: Any, *, trust_remote_code: bool = False) -> Any:
    """The folder's tokenizer. One whose ``tokenizer_config.json`` names the generic fast class (as iclkit's converted
    GGUF folders do) is built by that class directly: the same tokenizer ``AutoTokenizer`` builds (a test compares
    them), without its class lookup (~0.9 of 1.2 CPU s at start-up on this project's CPU). Any other goes through
    ``AutoTokenizer``, which knows model-specific classes."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = Path(folder) / "tokenizer_config.json"
    try:
        named = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError):
        named = None
    if named in GENERIC_TOKENIZERS and (Path(folder) / "tokenizer.json").is_file() and not trust_remote_code:
        return PreTrainedTokenizerFast.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
