"""ICL on real SST-2 with the real SmolLM2: 4 shots put almost all probability mass on the two label words."""

from __future__ import annotations



def test_four_shot_sst2_label_mass_and_accuracy(data_dir, smol, monkeypatch):
    import iclkit.runner.model

    monkeypatch.setattr(iclkit.runner.model, "load_lm", lambda spec: smol)  # reuse the session's model
    result = iclkit.evaluate("sst2", shots=[0, 4], n_episodes=20, n_way=2, n_query=16, seed=0, methods=["icl"],
                             prompt="sentiment", progress=False)  # one prompt (sst2 lists three: template spread)
    rows = {r["shots"]: r for r in result.summary}
    four = rows[4]
    assert four["n_episodes"] == 20 and four["n_queries"] == 320
    assert four["label_mass"] >= 0.8          # ICL teaches the answer format
    assert rows[0]["label_mass"] < 0.5        # zero-shot, the model mostly says something else
    assert four["ci_low"] <= four["accuracy"] <= four["ci_high"]
    assert four["accuracy"] > 0.5             # better than chance on a balanced binary task
    print(result.table())
