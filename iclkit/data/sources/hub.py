"""``kind: hub``: a Hugging Face hub dataset (``id``, ``config``, ``revision``, split names, field map)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping

from iclkit import hub
from iclkit.data.rows import to_examples
from iclkit.data.sources import SourceUnavailable, register_source
from iclkit.data.spec import TaskData, TaskSpec
from iclkit.errors import IclkitError
from iclkit.types import Example


@contextmanager
def quiet_datasets() -> Iterator[Any]:
    """The ``datasets`` module with its log and progress bars off inside the block; both are restored after.

    Its builders log a failure before raising it; a failure here makes the source unavailable with its own reason.
    """
    import datasets

    verbosity = datasets.logging.get_verbosity()
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield datasets
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_were_off:
            datasets.enable_progress_bars()


def load_hub(spec: TaskSpec, src: Mapping[str, Any]) -> TaskData:
    """Train and test splits of a hub dataset; unavailable (not an error) offline or when it cannot be fetched."""
    if not isinstance(src.get("id"), str):
        raise IclkitError("a hub source needs id: OWNER/NAME", file=spec.file, field="source.id")
    ident = src["id"]
    fields = src.get("fields") or {}
    if not isinstance(fields, dict):
        raise IclkitError("must map the task's field names to the dataset's columns", file=spec.file,
                          field="source.fields")
    if not hub.reachable():
        raise SourceUnavailable(f"hub dataset {ident!r} cannot be reached (offline)")
    splits = {"train": src.get("train_split", "train"), "test": src.get("test_split", "test")}
    parts: dict[str, list[Example]] = {}
    for split, hub_split in splits.items():
        with quiet_datasets() as datasets:
            try:
                ds = datasets.load_dataset(ident, src.get("config"), split=hub_split, revision=src.get("revision"))
            except Exception as e:  # noqa: BLE001 - network and hub errors come in many types
                raise SourceUnavailable(f"hub dataset {ident!r} cannot be reached ({type(e).__name__})") from None
        feature = ds.features.get(fields.get("label", spec.label_field))
        names = list(getattr(feature, "names", []) or []) or None
        parts[split] = to_examples(ds, spec, split, file=f"hf://datasets/{ident}",
                                   line_of=lambda i: i + 1, field_map=fields, label_names=names)
    return TaskData(spec, tuple(parts["train"]), tuple(parts["test"]), f"hf://datasets/{ident}")


register_source("hub")(load_hub)
