"""Task files: plain YAML (``tasks/*.yaml``) naming data sources, fields, labels and a prompt; and loading a task."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from iclkit.data.sources import available_sources, load_examples
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.errors import IclkitError
from iclkit.files import read_yaml
from iclkit.paths import shipped_dir


def _require(d: Mapping[str, Any], key: str, file: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in d:
        raise IclkitError("missing required key", file=file, field=key)
    value = d[key]
    if not isinstance(value, kind):
        raise IclkitError(f"expected {getattr(kind, '__name__', kind)}, got {type(value).__name__}", file=file, field=key)
    return value


def _prompt_ref(prompt: str, file: str) -> str:
    """A prompt file named in a task file is found beside the task file (like ``source: local`` paths), whatever
    the working directory; a registered prompt name stays a name."""
    if Path(prompt).suffix not in (".yaml", ".yml"):
        return prompt
    return os.path.normpath(os.path.join(os.path.abspath(Path(file).parent), prompt))


def parse_spec(raw: Any, file: str) -> TaskSpec:
    """Validate a task mapping (already parsed from YAML) into a TaskSpec."""
    if not isinstance(raw, dict):
        raise IclkitError("a task file must hold a mapping", file=file)
    name = _require(raw, "name", file)
    ttype = raw.get("type", "classification")
    if ttype not in ("classification", "generation"):
        raise IclkitError(f"unknown task type {ttype!r} (classification or generation)", file=file, field="type")
    inputs = raw.get("inputs", ["text"])
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) and i for i in inputs):
        raise IclkitError("must be a non-empty list of field names", file=file, field="inputs")
    labels = raw.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, (str, int)) for x in labels):
        raise IclkitError("must be a list of label names", file=file, field="labels")
    if any(isinstance(x, bool) for x in labels):
        raise IclkitError("a label was read as a boolean: YAML turns unquoted yes/no/on/off/true/false into "
                          "booleans, so quote them ('yes')", file=file, field="labels")
    if len(set(map(str, labels))) != len(labels):
        raise IclkitError("label names must be unique", file=file, field="labels")
    sources = raw.get("source")
    if isinstance(sources, dict):
        sources = [sources]
    if not isinstance(sources, list) or not sources:
        raise IclkitError("missing or empty", file=file, field="source")
    kinds = available_sources()
    for s in sources:
        if not isinstance(s, dict) or s.get("kind") not in kinds:
            got = f" (got {s.get('kind')!r})" if isinstance(s, dict) and "kind" in s else ""
            raise IclkitError(f"each source needs kind: one of {', '.join(kinds)}{got}", file=file, field="source")
    prompt = raw.get("prompt", "default")
    if not isinstance(prompt, str) or not prompt.strip() or "\0" in prompt:
        raise IclkitError("must be a prompt name or a prompt .yaml file", file=file, field="prompt")
    corpus = raw.get("corpus", "")
    if not isinstance(corpus, str):
        raise IclkitError("must be a corpus name (tasks that share texts name the same corpus)", file=file,
                          field="corpus")
    prompts = raw.get("prompts", [])
    if not isinstance(prompts, list) or not all(isinstance(p, str) and p.strip() and "\0" not in p for p in prompts):
        raise IclkitError("must be a list of prompt names or prompt .yaml files", file=file, field="prompts")
    if len(set(prompts)) != len(prompts):
        raise IclkitError("prompt names must be unique", file=file, field="prompts")
    if prompts and "prompt" not in raw:
        prompt = prompts[0]  # the task's main prompt is the first of its list
    content_free = raw.get("content_free")
    if content_free is not None and (not isinstance(content_free, list) or not content_free
                                     or not all(isinstance(x, str) for x in content_free)):
        raise IclkitError("must be a non-empty list of content-free input texts (e.g. ['N/A', '', '[MASK]'])",
                          file=file, field="content_free")
    known = {"name", "type", "inputs", "labels", "prompt", "source", "label_field", "description", "corpus",
             "prompts", "content_free"}
    return TaskSpec(
        name=name,
        type=ttype,
        inputs=tuple(inputs),
        labels=tuple(str(x) for x in labels),
        prompt=_prompt_ref(prompt, file),
        sources=tuple(sources),
        label_field=str(raw.get("label_field", "label")),
        description=str(raw.get("description", "")),
        file=file,
        extra={k: v for k, v in raw.items() if k not in known},
        corpus=corpus.strip(),
        prompts=tuple(_prompt_ref(p, file) for p in prompts),
        content_free=tuple(content_free) if content_free is not None else None,
    )


def read_spec(path: str | Path) -> TaskSpec:
    """Read a task YAML file (safe_load: data only, no tags that build objects)."""
    return parse_spec(read_yaml(path, "task file"), str(path))


def registry() -> dict[str, Path]:
    """Registered task names → their YAML files (the ``tasks/`` folder)."""
    return {p.stem: p for p in sorted(shipped_dir("tasks").glob("*.yaml"))}


def local_file_spec(path: Path, text_field: str | None = None, label_field: str | None = None) -> TaskSpec:
    """A task for a bare .jsonl/.csv file: fields ``text``/``label`` unless told; queries from a held-out part."""
    inputs = [f.strip() for f in (text_field or "text").split(",")]
    return TaskSpec(
        name=path.stem,
        type="classification",
        inputs=tuple(inputs),
        labels=(),
        prompt="default",
        sources=({"kind": "local", "train": str(path.resolve()), "holdout": 0.5},),
        label_field=label_field or "label",
        file=str(path),
    )


def resolve_spec(task: str | Path | TaskSpec, *, text_field: str | None = None,
                 label_field: str | None = None) -> TaskSpec:
    """A registered name, a task YAML path, or a .jsonl/.csv path → TaskSpec."""
    if isinstance(task, TaskSpec):
        return task
    text = str(task)
    reg = registry()
    if text in reg:
        return read_spec(reg[text])
    path = Path(text)
    if path.suffix in (".yaml", ".yml"):
        return read_spec(path)
    if path.suffix in (".jsonl", ".json", ".csv"):
        if not path.is_file():
            raise IclkitError("no such file", file=text)
        return local_file_spec(path, text_field, label_field)
    raise IclkitError(
        f"unknown task {text!r}",
        hint=f"registered tasks: {', '.join(reg)}; or give a task .yaml or a .jsonl/.csv file",
    )


def load_task(task: str | Path | TaskSpec, *, text_field: str | None = None,
              label_field: str | None = None) -> TaskData:
    """A registered name, a task YAML path, a .jsonl/.csv path or a TaskSpec → its train and test examples."""
    return load_examples(resolve_spec(task, text_field=text_field, label_field=label_field))
