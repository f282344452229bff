"""Bad Fair-ICL input: one message naming the option (and file), exit code 2, no output folder left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iclkit.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", "--no-progress", "--episodes", "1", "--n-query", "2", *args])
    return code, capsys.readouterr().err


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_unknown_calibration(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--calibration", "none,platt", "--out", str(out))
    assert code == 2 and "field 'calibration'" in err and "'platt'" in err and "contextual" in err
    assert no_leftovers(out)


def test_calibration_without_a_method_that_has_it(tmp_path, capsys):
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--methods", "knn", "--calibration", "batch")
    assert code == 2 and "field 'calibration'" in err


def test_empty_content_free_list(tmp_path, capsys):
    rows = [{"text": f"sentence {i}", "label": ["good", "bad"][i % 2]} for i in range(12)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.yaml").write_text("name: t\nlabels: [good, bad]\ncontent_free: []\n"
                                     "source: {kind: local, train: d.jsonl, holdout: 0.5}\n")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", str(tmp_path / "t.yaml"), "--calibration", "contextual", "--out", str(out))
    assert code == 2 and "t.yaml: field 'content_free'" in err and "non-empty" in err
    assert no_leftovers(out)


@pytest.mark.parametrize("body,calibration", [
    ('template: "Review: {text}\\nSentiment:"\ndomain_premise: ""\n', "none"),  # empty where it must not be
    ('template: "Review: {text}"\n', "none,dcpmi"),  # no answer cue to derive one from, and none set
])
def test_empty_domain_premise(tmp_path, capsys, body, calibration):
    (tmp_path / "p.yaml").write_text(body + "verbalizer: {negative: bad, positive: good}\n")
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--prompt", str(tmp_path / "p.yaml"),
                        "--calibration", calibration, "--out", str(out))
    assert code == 2 and "p.yaml: field 'domain_premise'" in err, err
    assert no_leftovers(out)


def test_similar_demos_without_a_usable_embedder(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--shots", "2", "--demos", "similar",
                        "--embed", str(tmp_path / "no-such-encoder"), "--out", str(out))
    assert code == 2 and "field 'demos'" in err and "no usable embedder" in err and "--embed" in err
    assert no_leftovers(out)


@pytest.mark.parametrize("args,message", [
    (("--shots", "0,1", "--demos", "similar", "--demos-per-query", "3"), "smallest support set of the run holds 2"),
    (("--shots", "2", "--demos-per-query", "2"), "applies to --demos similar only"),
    (("--shots", "2", "--demos", "similar", "--demos-per-query", "-1"), "must be ≥ 0"),
    (("--shots", "2", "--demos", "nearest"), "must be one of random, similar, interleaved"),
])
def test_bad_demonstration_options(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", "movie-sentiment", *args, "--out", str(out))
    field = "demos" if "--demos-per-query" not in args else "demos_per_query"
    assert code == 2 and f"field '{field}'" in err and message in err, err
    assert no_leftovers(out)
