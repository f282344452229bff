"""`iclkit run` keeps what it computes: without --out the results go to a fresh folder under runs/."""

from __future__ import annotations

import json

from iclkit.cli import main


def test_run_without_out_saves_to_a_default_folder_and_says_where(tmp_path, monkeypatch, capsys, data_dir):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--task", "sst2", "--prompt", "sentiment", "--shots", "0", "--episodes", "1", "--n-query", "2",
                 "--methods", "icl",
                 "--dtype", "float32", "--no-progress"]) == 0
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("sst2-smollm2-135m-instruct-")
    records = [json.loads(line) for line in (folder / "records.jsonl").open()]
    assert len(records) == 2 and {r["method"] for r in records} == {"icl"}
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"wrote {folder.relative_to(tmp_path)}/")
