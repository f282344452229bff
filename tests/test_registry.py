"""The one registry shape behind learners, backends, task sources and formats: built-in names import their module on
first use, unknown names are an IclkitError listing the valid ones, and a plugin whose dependencies are missing says
which entry needs them."""

from __future__ import annotations

import sys

import pytest

from iclkit.errors import IclkitError

MODULES = ("widgets_reg", "widget_a", "widget_needs_missing")


@pytest.fixture
def widgets(tmp_path, monkeypatch):
    (tmp_path / "widgets_reg.py").write_text(
        "from iclkit.registry import Registry\n"
        "REG = Registry('widget', 'widgets', {'a': 'widget_a', 'silent': 'json'},\n"
        "               plugins=lambda: {'p': 'widget_needs_missing'})\n")
    (tmp_path / "widget_a.py").write_text("from widgets_reg import REG\nREG.add('a', 1)\n")
    (tmp_path / "widget_needs_missing.py").write_text("import iclkit_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import widgets_reg

    yield widgets_reg.REG
    for name in MODULES:
        sys.modules.pop(name, None)


def test_built_ins_import_on_first_use(widgets):
    assert widgets.names() == ["a", "p", "silent"] and "widget_a" not in sys.modules
    assert widgets.get("a") == 1 and "widget_a" in sys.modules
    widgets.add("b", 2)
    assert widgets.get("b") == 2 and widgets.names() == ["a", "b", "p", "silent"]
    widgets.remove("b")
    widgets.remove("never-registered")  # ignored
    assert "b" not in widgets.names()


def test_unknown_names_and_broken_plugins_are_user_errors(widgets):
    with pytest.raises(IclkitError, match="unknown widget 'zzz'") as e:
        widgets.get("zzz", file="run.yaml")
    assert (e.value.field, e.value.file, e.value.hint) == ("widgets", "run.yaml", "available: a, p, silent")
    with pytest.raises(IclkitError, match="unknown widget 'silent'"):  # its module imported but registered nothing
        widgets.get("silent")
    with pytest.raises(IclkitError, match="widget 'p' cannot be imported: No module named 'iclkit_no_such_dependency'"):
        widgets.get("p")
