"""``verify_run(RUN)``: check a run folder's episode hashes, re-score a seeded sample under each setting, compare
with the run's records, and write RUN/verify.json (see the package docstring for the modules it composes)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from iclkit.errors import IclkitError
from iclkit.runner.collect import versions
from iclkit.runner.plan import RunPlan, plan
from iclkit.verify.certificate import VERIFY_VERSION, delta_text, fingerprint, verified_text, write_certificate
from iclkit.verify.compare import compare, default_tolerance, log_prob_scores, rounded, score_unit
from iclkit.verify.difference import Difference, merged
from iclkit.verify.inputs import RunFolder, hash_differences, hash_table, read_folder
from iclkit.verify.rescore import (Rescored, WorkerFailed, rescore, rescore_in_processes, with_batch_size,
                                   with_model)
from iclkit.verify.sample import (DEFAULT_EPISODES, Sample, check_count, declared_meta_learners, draw, rescorable,
                                  restrict)
from iclkit.verify.settings import (SETTINGS, Setting, SettingName, cpu_cores, other_batch_size, other_threads,
                                    parse_settings, processes_refused, torch_threads)

SHOWN = 20  # differences listed per setting in verify.json (all are counted)


@dataclass(frozen=True)
class Verification:
    """What ``verify_run`` found: whether the run verifies, the certificate written (``doc``, at ``path``), and
    every difference (one entry each, with the settings it was found under)."""

    path: Path
    passed: bool
    doc: Mapping[str, Any]
    differences: tuple[Difference, ...]

    def text(self, shown: int = 10) -> str:
        """A table of the settings, the differences (the first ``shown``), and the verdict line."""
        d = self.doc
        sample = d["sample"]
        n_eps = sum(len(ids) for ids in sample["episodes"].values())
        per_task = sample["episodes_per_task"]
        per_task = "every episode" if per_task == "all" else f"up to {per_task} per task"
        lines = [f"sample: {n_eps} episode(s) (seed {sample['seed']}, {per_task}); "
                 f"methods re-scored: {', '.join(d['methods']['rescored']) or 'none'}"
                 + (f"; not re-scored: {', '.join(d['methods']['skipped'])}" if d["methods"]["skipped"] else ""),
                 f"tolerance: {d['tolerance']:g} ({d['tolerance_reason']})", "",
                 "| setting | changed | queries | identical | max abs Δ log-prob | max rel. Δ (baselines) | result |",
                 "|---|---|---:|---:|---:|---:|---|"]
        for s in d["settings"]:
            result = s["status"] + (f": {s['reason']}" if s.get("reason") else "")
            lines.append(f"| {s['name']} | {s['changed']} | {s.get('compared', '–')} | {s.get('identical', '–')} | "
                         f"{delta_text(s.get('max_abs_delta'))} | {delta_text(s.get('max_rel_delta'))} | {result} |")
        if self.differences:
            lines += ["", f"{len(self.differences)} difference(s):"]
            lines += [f"  {x.text()}" for x in self.differences[:shown]]
            if len(self.differences) > shown:
                lines.append(f"  ... and {len(self.differences) - shown} more (verify.json lists them)")
        return "\n".join([*lines, "", verified_text(d), f"wrote {self.path}"])


def verify_run(path: str | Path, *, sample: int = DEFAULT_EPISODES, seed: int | None = None,
               tolerance: float | None = None, settings: str | Sequence[str] = SETTINGS,
               log: Callable[[str], None] | None = None) -> Verification:
    """Verify the run folder ``path`` and write ``path``/verify.json (atomically; nothing is written when the folder
    is not a readable run, an IclkitError).

    ``sample``: episodes per task to re-score (0: all), drawn with ``random.Random(seed)`` (default: the run's
    seed); ``tolerance``: the largest |Δ| allowed in a number (default by the run's precision, ``default_tolerance``);
    ``settings``: which of ``SETTINGS`` to re-score under; ``log``: called with a line as each setting starts."""
    names = parse_settings(settings)
    check_count(sample)
    if tolerance is not None and (isinstance(tolerance, bool) or not math.isfinite(tolerance) or tolerance < 0):
        raise IclkitError(f"must be a number ≥ 0, got {tolerance!r}", field="tolerance")
    run = read_folder(path)
    files = fingerprint(run.path)  # what was read: a file changed after this voids the certificate
    # Only learners that need no meta-training are planned: the episodes are drawn as in the run (they do not depend
    # on the methods), and no meta-training episode is drawn.
    kept = rescorable(run.config.methods)
    planned = plan(replace(run.config, methods=kept))
    hashes = hash_differences(run, planned.episodes)
    tol, why = (float(tolerance), "given") if tolerance is not None else default_tolerance(run.manifest.get("model"))
    drawn = draw(planned.episodes, sample, run.config.episodes.seed if seed is None else seed)
    scoped = restrict(planned, drawn)
    rows: list[dict[str, Any]] = []
    found: list[Difference] = list(hashes)
    skipped = declared_meta_learners(run.config.methods)
    if hashes:
        rows = [{"name": name, "changed": "", "status": "not run",
                 "reason": "the episodes no longer match their hashes"} for name in names]
    elif not kept:
        rows = [{"name": name, "changed": "", "status": "skipped",
                 "reason": "every method of the run meta-trains"} for name in names]
    else:
        for name, setting, outcome in _settings(run, scoped, drawn, names, log):
            row, diffs = _row(run, setting, outcome, drawn, scoped, tol)
            rows.append(row)
            found += [x.under((name,)) for x in diffs]
            if isinstance(outcome, tuple):
                skipped.update(outcome[0].skipped)
    differences = tuple(merged(found))
    passed = (not differences and any(r["status"] == "passed" for r in rows)
              and not any(r["status"] == "error" for r in rows))
    doc = {**_certificate(run, drawn, scoped, rows, differences, skipped, tol, why, planned, passed), "files": files}
    return Verification(write_certificate(run.path, doc), passed, doc, differences)


# A setting re-scored (its records, seconds taken), or why it was not (skipped; "error: ..." when it failed).
Outcome = tuple[Rescored, float] | str


def _settings(run: RunFolder, scoped: RunPlan, drawn: Sample, names: Sequence[SettingName],
              log: Callable[[str], None] | None) -> Iterator[tuple[SettingName, Setting, Outcome]]:
    """Each setting asked for, in ``SETTINGS``' order, and its outcome."""
    import torch

    threads = torch.get_num_threads()
    rows = run.config.model.batch_size
    control = with_model(scoped, rows)  # the run's batch size: no-score-cache and threads share its model
    for name in names:
        if name == "no-score-cache":
            setting = Setting(name, rows, threads, changed="scores recomputed, no score cache")
        elif name == "threads":
            setting = Setting(name, rows, other_threads(threads),
                              changed=f"torch threads {threads} → {other_threads(threads)}")
        elif name == "batch-size":
            used = rows or _auto_rows(control)
            if used is None:
                yield name, Setting(name, rows, threads, changed="LM batch size"), \
                    "no re-scored method uses the language model, or its backend has no batch size"
                continue
            setting = Setting(name, other_batch_size(used), threads,
                              changed=f"LM batch size {used} → {other_batch_size(used)}")
        else:
            setting = Setting(name, rows, 1, processes=2, changed="2 processes (torchrun, gloo), 1 thread each")
            refused = processes_refused(_device(control, run))
            if refused:
                yield name, setting, refused
                continue
        if log:
            log(f"re-scoring under {name}: {setting.changed}")
        started = time.monotonic()
        try:
            if setting.processes > 1:
                rescored = rescore_in_processes(scoped.config.to_dict(), drawn, setting.batch_size,
                                                setting.processes)
            else:
                with torch_threads(setting.threads):
                    rescored = rescore(with_batch_size(scoped, control.model, setting.batch_size)
                                       if name == "batch-size" else control)
        except WorkerFailed as e:
            yield name, setting, f"error: {e}"
            continue
        yield name, setting, (rescored, round(time.monotonic() - started, 1))


def _auto_rows(control: RunPlan) -> int | None:
    """Rows per batch the backend chose for a run with batch size 0 (automatic)."""
    control.model()
    return getattr(control.model.backend, "batch_size", None)


def _device(control: RunPlan, run: RunFolder) -> str:
    """Where the model runs here (as loaded, else as the run's spec says)."""
    if control.model.loaded:
        return str(control.model.lm.device)
    device = run.config.model.device
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _row(run: RunFolder, setting: Setting, outcome: Outcome, drawn: Sample, scoped: RunPlan,
         tol: float) -> tuple[dict[str, Any], list[Difference]]:
    """One setting's entry in verify.json, and its differences."""
    row = setting.to_dict()
    if isinstance(outcome, str):
        status = "error" if outcome.startswith("error: ") else "skipped"
        return {**row, "status": status, "reason": outcome.removeprefix("error: ")}, []
    rescored, seconds = outcome
    methods = [m for m in _methods(scoped) if m not in rescored.skipped]
    c = compare(run.records, rescored.records, tol, methods, lambda task, eid: eid in drawn.episodes.get(task, ()),
                own_scale=_own_scale(run))
    return {**row, "status": "passed" if c.passed else "failed", "compared": c.compared,
            "identical": c.compared - c.mismatched_predictions, "mismatched_predictions": c.mismatched_predictions,
            "max_abs_delta": rounded(c.max_abs_delta), "max_rel_delta": rounded(c.max_rel_delta),
            "by_method": {m: v.to_dict() for m, v in c.by_method.items()},
            "lm": rescored.lm, "seconds": seconds, "n_differences": len(c.differences),
            "differences": [x.to_dict() for x in c.differences[:SHOWN]]}, list(c.differences)


def _own_scale(run: RunFolder) -> set[str]:
    """Methods whose scores are on their own scale, not LM log-probs (compared relatively)."""
    described = run.manifest.get("methods") or {}
    return {key.split("/", 1)[-1] for key, d in described.items()
            if isinstance(d, Mapping) and not log_prob_scores(d)}


def _methods(scoped: RunPlan) -> list[str]:
    """The methods the restricted plan re-scores."""
    return list(dict.fromkeys(name for lp in scoped.learners for name in lp.outputs or (lp.method,)))


def _certificate(run: RunFolder, drawn: Sample, scoped: RunPlan, rows: list[dict[str, Any]],
                 differences: Sequence[Difference], skipped: Mapping[str, str], tol: float, why: str,
                 planned: RunPlan, passed: bool) -> dict[str, Any]:
    ran = [r for r in rows if r["status"] in ("passed", "failed")]
    deltas = [r["max_abs_delta"] for r in ran if r.get("max_abs_delta") is not None]
    relative = [r["max_rel_delta"] for r in ran if r.get("max_rel_delta") is not None]
    rescored = [m for m in _methods(scoped) if m not in skipped]
    described = run.manifest.get("methods") or {}
    summary = {"settings_run": len(ran), "settings_skipped": [r["name"] for r in rows if r["status"] == "skipped"],
               "settings_failed_to_run": [r["name"] for r in rows if r["status"] == "error"],
               "compared": sum(r["compared"] for r in ran), "identical": sum(r["identical"] for r in ran),
               "max_abs_delta": max(deltas, default=None), "max_rel_delta": max(relative, default=None),
               "differences": len(differences),
               **({"first_difference": differences[0].text()} if differences else {})}
    return {
        "version": VERIFY_VERSION,
        "run": run.path.name,
        "passed": passed,
        "summary": summary,
        "tolerance": tol,
        "tolerance_reason": why,
        "sample": drawn.to_dict(),
        "methods": {"rescored": rescored, "skipped": dict(skipped)},
        "score_units": {key: score_unit(d) for key, d in described.items()
                        if isinstance(d, Mapping) and key.split("/", 1)[-1] in rescored},
        "episodes": {"episodes": len(run.episodes), "records": len(run.records),
                     "tasks": hash_table(run, planned.episodes)},
        "settings": rows,
        "differences": [x.to_dict() for x in differences[:200]],
        "versions": versions(),
        "cpu_cores": cpu_cores(),
        "run_versions": {k: v for k, v in (run.manifest.get("versions") or {}).items()
                         if k in ("iclkit", "torch", "transformers", "python")},
        "run_processes": run.manifest.get("processes"),
    }

