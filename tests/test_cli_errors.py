"""Bad input: one clear message naming file, line and field; exit code 2; no output folder left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from iclkit.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", "--no-progress", *args])
    return code, capsys.readouterr().err


def no_leftovers(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def jsonl(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


GOOD = [{"text": f"sentence {i}", "label": ["yes", "no"][i % 2]} for i in range(12)]


@pytest.mark.parametrize("bad,where", [
    ('{"text": "oops", "label": "yes"', "data.jsonl:13"),
    ({"label": "yes"}, "data.jsonl:13: field 'text'"),
    ({"text": "", "label": "yes"}, "data.jsonl:13: field 'text': empty text"),
    ({"text": "fine", "label": None}, "data.jsonl:13: field 'label'"),
])
def test_bad_rows(tmp_path, capsys, bad, where):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", jsonl(tmp_path / "data.jsonl", GOOD + [bad]), "--out", str(out))
    assert code == 2 and where in err and "Traceback" not in err
    assert no_leftovers(out)


def test_label_not_in_the_verbalizer(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", jsonl(tmp_path / "d.jsonl", GOOD), "--prompt", "sentiment", "--out", str(out))
    assert code == 2 and "sentiment.yaml: field 'verbalizer'" in err and "'no'" in err
    assert no_leftovers(out)


def test_data_label_not_among_task_labels(tmp_path, capsys):
    jsonl(tmp_path / "tr.jsonl", GOOD[:5] + [{"text": "odd", "label": "maybe"}])
    (tmp_path / "t.yaml").write_text("name: t\nlabels: ['yes', 'no']\nsource: {kind: local, train: tr.jsonl}\n")
    code, err = run_cli(capsys, "--task", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "out"))
    assert code == 2 and "tr.jsonl:6: field 'label'" in err and "maybe" in err


def test_yaml_booleans_as_labels_are_caught(tmp_path, capsys):
    (tmp_path / "t.yaml").write_text("name: t\nlabels: [yes, no]\nsource: {kind: local, train: tr.jsonl}\n")
    code, err = run_cli(capsys, "--task", str(tmp_path / "t.yaml"))
    assert code == 2 and "t.yaml: field 'labels'" in err and "quote" in err


def test_k_larger_than_a_class(tmp_path, capsys):
    code, err = run_cli(capsys, "--task", jsonl(tmp_path / "d.jsonl", GOOD), "--shots", "8",
                        "--out", str(tmp_path / "out"))
    assert code == 2 and "fewer than k=8" in err and "field 'shots'" in err
    assert no_leftovers(tmp_path / "out")


def test_prompt_longer_than_the_context_window(tmp_path, capsys):
    rows = [{"text": "very long review " * 1200 + str(i), "label": ["yes", "no"][i % 2]} for i in range(8)]
    out = tmp_path / "out"
    code, err = run_cli(capsys, "--task", jsonl(tmp_path / "long.jsonl", rows), "--shots", "2",
                        "--episodes", "1", "--n-query", "2", "--out", str(out))
    assert code == 2 and "context window" in err and "episode long/k2/e0" in err
    assert no_leftovers(out)


def test_unreachable_hub_model_names_offline_alternatives(tmp_path, capsys):
    code, err = run_cli(capsys, "--task", jsonl(tmp_path / "d.jsonl", GOOD), "--model", "nobody/no-such-model",
                        "--episodes", "1", "--shots", "0,1", "--out", str(tmp_path / "out"))
    assert code == 2 and "nobody/no-such-model" in err and "smollm2-135m-instruct" in err and ".gguf" in err
    assert no_leftovers(tmp_path / "out")


def test_unknown_task_and_bad_options(tmp_path, capsys):
    code, err = run_cli(capsys, "--task", "no-such-task")
    assert code == 2 and "registered tasks" in err
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--shots", "1,x")
    assert code == 2 and "field 'shots'" in err
    code, err = run_cli(capsys, "--task", "movie-sentiment", "--methods", "telepathy")
    assert code == 2 and "unknown method" in err


def test_config_file_errors_name_the_file_and_key(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("task: movie-sentiment\nshotz: [0, 1]\n")
    code = main(["run", "--config", str(tmp_path / "run.yaml")])
    assert code == 2 and "run.yaml: field 'shotz': unknown option" in capsys.readouterr().err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    bad = jsonl(tmp_path / "d.jsonl", ['{"text": "x", "label": "yes"}', "not json"])
    # from another folder: in the repository root `-m iclkit` would import the source tree, not the installation
    proc = subprocess.run([sys.executable, "-m", "iclkit", "run", "--task", bad], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "d.jsonl:2" in proc.stderr and "malformed JSON" in proc.stderr and "Traceback" not in proc.stderr
