"""A self-contained HTML report of a leaderboard: sortable table with CIs, paired comparisons, embedded figures.

One file, no external URLs: styles and the sorting script are inline, figures are SVG data URIs (the learning curves
and forest plots of iclkit.export.figures, at two-column width). Nothing time-dependent is written, so the same runs
always give the same file. ``report.html#sort=accuracy:desc`` opens the table sorted by a column. The page fits a
1,400-px window without scrolling sideways: text cells wrap (at spaces first, anywhere if they must), numbers don't.
"""

from __future__ import annotations

import base64
import html
import re
from typing import Any, Mapping

from iclkit.analysis.paired import format_p
from iclkit.analysis.summary import budget_text, spread_text
from iclkit.export.formats import register_format
from iclkit.export.leaderboard import Leaderboard
from iclkit.export.meta_validation import meta_validation_section
from iclkit.export.figures import FigureKind, figure_name, paper_figures
from iclkit.export.plots import render_spread_plots, tasks_of
from iclkit.export.uses_plot import render_uses_plots

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1320px;
  padding:0 16px;color:#1d2330}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px} .muted{color:#667}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 6px;border-bottom:1px solid #e3e6ee;text-align:left;vertical-align:top;overflow-wrap:break-word}
td.num,th.num{text-align:right} td.num,.nw{white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none;background:#f4f6fa;position:sticky;top:0}
table.sortable th[data-order=asc]::after{content:" \\25B2"} table.sortable th[data-order=desc]::after{content:" \\25BC"}
tbody tr:hover{background:#f8f9fc}
.ci{position:relative;display:inline-block;width:64px;height:8px;background:#eef0f5;border-radius:4px;
  vertical-align:middle;margin-left:6px}
.ci span{position:absolute;top:0;height:8px;background:#7aa2e3;border-radius:4px}
.ci b{position:absolute;top:-2px;width:2px;height:12px;background:#1f4fa0}
.plots{display:flex;flex-wrap:wrap;gap:12px} figure{margin:0;border:1px solid #e3e6ee;border-radius:6px;padding:6px}
figure img{display:block;max-width:100%;height:auto} figure.paper img{width:920px}
.pos{color:#1a7f37} .neg{color:#b42318}
.ci i{position:absolute;top:-2px;left:50%;width:1px;height:12px;background:#98a2b3}
.stack{display:inline-flex;width:220px;height:12px;border-radius:3px;overflow:hidden;background:#eef0f5;
  vertical-align:middle}
.stack span{display:block;height:12px}
.key span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;border-radius:2px;vertical-align:middle}
.c-demonstrations{background:#4f7fd1} .c-template{background:#e0a030} .c-order{background:#c0504d}
.c-query{background:#8fbc8f} .c-residual{background:#c8ccd6}
"""

_JS = """
(function () {
  function key(row, col) {
    var cell = row.cells[col], v = cell.getAttribute("data-value");
    if (v === null) v = cell.textContent.trim();
    var n = parseFloat(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  function sortBy(th, order) {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex, dir = order === "asc" ? 1 : -1;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;  // blanks last
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-order"); });
    th.setAttribute("data-order", order);
  }
  document.querySelectorAll("table.sortable th").forEach(function (th) {
    th.addEventListener("click", function () {
      sortBy(th, th.getAttribute("data-order") === "desc" ? "asc" : "desc");
    });
  });
  window.addEventListener("load", function () {
    // how many embedded plots actually decoded: a quick check that the report renders (also used by the tests)
    var ok = Array.prototype.filter.call(document.images, function (i) { return i.complete && i.naturalWidth > 0; });
    document.body.setAttribute("data-rendered-images", String(ok.length));
    // the page's width against the window's: equal when nothing scrolls sideways (the tests read it too)
    var page = document.documentElement;
    document.body.setAttribute("data-scroll-width", page.scrollWidth + "/" + page.clientWidth);
  });
  var m = /sort=([\\w-]+)(?::(asc|desc))?/.exec(location.hash);
  if (m) {
    var th = document.querySelector('table.sortable th[data-key="' + m[1] + '"]');
    if (th) sortBy(th, m[2] || "desc");
  }
})();
"""


def _e(x: Any) -> str:
    return html.escape("–" if x is None else str(x), quote=True)


def _t(x: Any) -> str:
    """Escaped cell text that may also break after "/", "_" and "." (paths, metric and file names have no spaces),
    so a long name wraps instead of widening the page; sorting and copied text are unchanged."""
    return re.sub(r"([/_.])(?=\w)", r"\1<wbr>", _e(x))


def _num(x: Any, digits: int = 3) -> str:
    """A numeric cell: sort value in data-value, blank-safe display."""
    if x is None:
        return '<td class="num" data-value="">–</td>'
    shown = f"{x:.{digits}f}" if isinstance(x, float) else str(x)
    return f'<td class="num" data-value="{_e(x)}">{shown}</td>'


def _ci_cell(row: Mapping[str, Any]) -> str:
    lo, hi, acc = row.get("ci_low"), row.get("ci_high"), row.get("accuracy")
    if lo is None or hi is None or acc is None:
        return '<td data-value="">–</td>'
    bar = (f'<span class="ci" title="95% CI"><span style="left:{lo * 100:.1f}%;width:{(hi - lo) * 100:.1f}%">'
           f'</span><b style="left:{acc * 100:.1f}%"></b></span>')
    return f'<td class="nw" data-value="{hi - lo:.4f}">[{lo:.3f}, {hi:.3f}]{bar}</td>'


def _budget_cell(row: Mapping[str, Any]) -> str:
    """The method's meta-training data in words; sorts by its number of labelled texts; the tasks and classes on
    hover."""
    n = row.get("n_meta_texts")
    title = "; ".join(x for x in (", ".join(row.get("meta_tasks") or []), ", ".join(row.get("meta_classes") or []))
                      if x)
    return (f'<td data-value="{_e("" if n is None else n)}" title="{_e(title)}">{_e(budget_text(row))}</td>')


def _spread(lb: Leaderboard) -> bool:
    return any(r.get("n_prompts") for r in lb.rows)


def _spread_cell(row: Mapping[str, Any]) -> str:
    """Min–max of the per-prompt mean accuracies and their SD; sorts by the SD."""
    if not row.get("n_prompts"):
        return '<td data-value="">–</td>'
    return f'<td data-value="{_e(row.get("prompt_std"))}">{_e(spread_text(row))}</td>'


def _calibration_table(lb: Leaderboard) -> str:
    heads = [("model", ""), ("task", ""), ("shots", "num"), ("method", ""), ("vs", ""), ("episodes", "num"),
             ("Δ accuracy", "num"), ("95% CI", ""), ("p", "num"), ("Δ macro-F1", "num"), ("95% CI", ""), ("p", "num"),
             ("run", "")]
    out = ['<table class="sortable" id="calibration"><thead><tr>']
    out += [f'<th class="{cls}" data-key="k-{i}">{_e(label)}</th>' for i, (label, cls) in enumerate(heads)]
    out.append("</tr></thead><tbody>")
    for c in lb.calibration:
        note = ' <span class="muted">(transductive)</span>' if c["transductive"] else ""
        cells = [f"<td>{_e(c['model'])}</td>", f"<td>{_e(c['task'])}</td>", _num(c["shots"]),
                 f"<td>{_e(c['method'])}{note}</td>", f"<td>{_e(c['reference'])}</td>", _num(c["n_episodes"])]
        for d, lo, hi, p in ((c["mean_diff"], c["ci_low"], c["ci_high"], c["p_value"]),
                             (c["f1_diff"], c["f1_ci_low"], c["f1_ci_high"], c["f1_p_value"])):
            sign = "pos" if d and d > 0 else "neg" if d and d < 0 else ""
            cells += [f'<td class="num {sign}" data-value="{_e(d)}">{d:+.3f}</td>', f"<td>[{lo:+.3f}, {hi:+.3f}]</td>",
                      f'<td class="num" data-value="{_e(p)}">{_e(format_p(p))}</td>']
        cells.append(f"<td>{_e(c['run'])}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _calibration_section(lb: Leaderboard) -> str:
    if not lb.calibration:
        return ""
    return f"""<h2>Calibration</h2>
<p class="muted">Each calibrated ICL output minus its raw output on the same episodes of the same run (all from one
scoring pass): contextual (Zhao et al. 2021), domain-conditional PMI (Holtzman et al. 2021) and batch calibration
(Zhou et al. 2024; <b>transductive</b>: it uses the episode's other unlabelled queries). 95% bootstrap CIs over
episodes; p from a two-sided paired permutation test.</p>
{_calibration_table(lb)}
"""


def _spread_section(lb: Leaderboard) -> str:
    if not lb.prompts:
        return ""
    figures = []
    for task, images in render_spread_plots(lb.rows, lb.prompts, formats=("svg",)).items():
        data = base64.b64encode(images["svg"]).decode("ascii")
        figures.append(f'<figure><img alt="template spread, {_e(task)}" src="data:image/svg+xml;base64,{data}">'
                       f"</figure>")
    return f"""<h2>Template spread</h2>
<p class="muted">Accuracy against shots under each prompt of a task (thin lines, same episodes) and their mean
(bold); a row's "across prompts" column gives the per-prompt minimum, maximum and standard deviation.</p>
<div class="plots">{"".join(figures)}</div>
"""


def _reliance_cell(rel: Mapping[str, Any] | None) -> str:
    """Label reliance with its CI as a bar on [-1, 1] (tick at 0)."""
    if not rel or rel.get("mean") is None or rel.get("ci_low") is None:
        return '<td data-value="">–</td>'
    lo, hi, m = (float(rel[k]) for k in ("ci_low", "ci_high", "mean"))
    pos = lambda x: (x + 1) / 2 * 100  # noqa: E731
    bar = (f'<span class="ci" title="95% CI, scale -1 to 1"><i></i><span style="left:{pos(lo):.1f}%;'
           f'width:{(hi - lo) / 2 * 100:.1f}%"></span><b style="left:{pos(m):.1f}%"></b></span>')
    return f'<td data-value="{m:.4f}">{m:+.3f} [{lo:+.3f}, {hi:+.3f}]{bar}</td>'


def _uses_section(lb: Leaderboard) -> str:
    """What each learner uses: label probes and reliance, order range, variance decomposition (runs with
    --labels/--orders)."""
    if not lb.uses:
        return ""
    parts = ['<h2>What each learner uses</h2>']
    figures = [f'<figure><img alt="what each learner uses, {_e(task)}" src="data:image/svg+xml;base64,'
               f'{base64.b64encode(images["svg"]).decode("ascii")}"></figure>'
               for task, images in render_uses_plots(lb.uses, formats=("svg",)).items()]
    parts.append('<p class="muted">Per task, one row per method and shots: label reliance with its 95% paired CI '
                 '(left), the mean range of accuracy over demonstration orders (middle; order-invariant learners run '
                 'one order), and each variance component\'s share (right). Tables below.</p>'
                 f'<div class="plots">{"".join(figures)}</div>')
    labels = lb.uses.get("labels", [])
    if labels:
        probes = list(dict.fromkeys(k for r in labels for k in r["probes"]))
        head = "".join(f'<th class="num">{_e(k)}</th>' for k in probes)
        body = []
        for r in labels:
            cells = "".join(_num((r["probes"].get(k) or {}).get("accuracy")) for k in probes)
            rel = r.get("reliance") or {}
            body.append(f"<tr><td>{_e(r['task'])}</td><td>{_e(r['method'])}</td>{_num(r['shots'])}"
                        f"{_num(r.get('chance'))}{cells}{_reliance_cell(r.get('reliance'))}{_num(rel.get('p_value'))}"
                        f"<td>{_t(r['run'])}</td></tr>")
        parts.append('<p class="muted">Accuracy with the support set\'s labels as drawn (gold), drawn at random, '
                     'flipped by a derangement, or shown as unrelated words (prompted learners only); queries are '
                     'always scored against their true labels. Label reliance = acc(gold) − acc(random) on the same '
                     'episodes, with a 95% paired bootstrap CI (bar on −1…1, tick at 0) and a two-sided paired '
                     'permutation p.</p>')
        parts.append(f'<table class="sortable"><thead><tr><th>task</th><th>method</th><th class="num">shots</th>'
                     f'<th class="num">chance</th>{head}<th>label reliance [95% CI]</th><th class="num">p</th>'
                     f'<th>run</th></tr></thead><tbody>{"".join(body)}</tbody></table>')
    orders = lb.uses.get("orders", [])
    if orders:
        body = []
        for r in orders:
            if r.get("order_invariant"):
                body.append(f"<tr><td>{_e(r['task'])}</td><td>{_e(r['method'])}</td>{_num(r['shots'])}"
                            f"{_num(1)}<td>order-invariant</td>{_num(0.0)}{_num(0.0)}<td>{_t(r['run'])}</td></tr>")
            else:
                body.append(f"<tr><td>{_e(r['task'])}</td><td>{_e(r['method'])}</td>{_num(r['shots'])}"
                            f"{_num(r.get('n_orders'))}{_ci_cell(r)}{_num(r.get('mean_range'))}"
                            f"{_num(r.get('changed_fraction'))}<td>{_t(r['run'])}</td></tr>")
        parts.append('<p class="muted">Demonstration order (gold labels): accuracy over the orders of each episode '
                     '(95% CI over episodes), the mean within-episode range (best minus worst order) and the '
                     'fraction of queries whose prediction changes with the order. Order-invariant learners run the '
                     'drawn order only.</p>')
        parts.append('<table class="sortable"><thead><tr><th>task</th><th>method</th><th class="num">shots</th>'
                     '<th class="num">orders</th><th>accuracy [95% CI]</th><th class="num">mean range</th>'
                     f'<th class="num">changed</th><th>run</th></tr></thead><tbody>{"".join(body)}</tbody></table>')
    variance = lb.uses.get("variance", [])
    if variance:
        names = list(dict.fromkeys(c for r in variance for c in (r.get("components") or {})))
        body = []
        for r in variance:
            comps = r.get("components")
            if comps is None:
                stack = f'<td>– ({_e(r.get("reason"))})</td>'
            else:
                spans = "".join(f'<span class="c-{_e(c)}" title="{_e(c)}: {(comps[c]["share"] or 0):.1%}" '
                                f'style="width:{(comps[c]["share"] or 0) * 100:.1f}%"></span>' for c in names)
                stack = f'<td><span class="stack">{spans}</span></td>'
            body.append(f"<tr><td>{_e(r['task'])}</td><td>{_e(r['method'])}</td>{_num(r['shots'])}"
                        f"{_num(r.get('total'))}{stack}<td>{_t(r['run'])}</td></tr>")
        key = "".join(f'<span class="c-{_e(c)}"></span>{_e(c)}' for c in names)
        parts.append('<p class="muted">Variance of per-query correctness (gold labels) split into demonstration set, '
                     'template, order, query and residual components (ANOVA method-of-moments estimator of a '
                     'random-effects model; iclkit.analysis.variance). Bars show each component\'s share.</p>'
                     f'<p class="key">{key}</p>')
        parts.append('<table class="sortable"><thead><tr><th>task</th><th>method</th><th class="num">shots</th>'
                     '<th class="num">total variance</th><th>components</th><th>run</th></tr></thead>'
                     f'<tbody>{"".join(body)}</tbody></table>')
    return "\n".join(parts) + "\n"


def _entry_budget(entry: Mapping[str, Any]) -> str:
    return f" ({_e(budget_text(entry))})" if entry.get("meta_train") is not None else ""


def _rows_table(lb: Leaderboard) -> str:
    extra = lb.metric_names()
    heads = [("model", "model", ""), ("task", "task", ""), ("method", "method", ""), ("shots", "shots", "num"),
             ("episodes", "n_episodes", "num"), ("queries", "n_queries", "num"), ("accuracy", "accuracy", "num"),
             ("95% CI", "ci", ""), *([("across prompts", "prompt_std", "")] if _spread(lb) else []),
             ("macro-F1", "macro_f1", "num"), ("ECE", "ece", "num"), ("meta-training data", "n_meta_texts", ""),
             *[(m, m, "num") for m in extra], ("run", "run", "")]
    out = ['<table class="sortable" id="leaderboard"><thead><tr>']
    out += [f'<th class="{cls}" data-key="{_e(key)}">{_t(label)}</th>' for label, key, cls in heads]
    out.append("</tr></thead><tbody>")
    for r in lb.rows:
        cells = [f"<td>{_t(r['model'])}</td>", f"<td>{_t(r['task'])}</td>", f"<td>{_t(r['method'])}</td>",
                 _num(r["shots"]), _num(r["n_episodes"]), _num(r["n_queries"]), _num(r["accuracy"]), _ci_cell(r),
                 *([_spread_cell(r)] if _spread(lb) else []), _num(r["macro_f1"]), _num(r["ece"]), _budget_cell(r),
                 *[_num(r.get("metrics", {}).get(m, {}).get("value")) for m in extra], f"<td>{_t(r['run'])}</td>"]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _entry_run(lb: Leaderboard, entry: Mapping[str, Any]) -> str:
    """The run of a comparison entry, when the report merges several (e.g. --demos random and similar)."""
    return f' <span class="muted">[{_e(entry["run"])}]</span>' if len(lb.runs) > 1 else ""


def _comparisons_table(lb: Leaderboard) -> str:
    if not lb.comparisons:
        return '<p class="muted">No paired comparisons (they need a reference method and shared episodes).</p>'
    heads = [("task", ""), ("shots", "num"), ("A", ""), ("B", ""), ("episodes", "num"), ("unpaired", "num"),
             ("A − B", "num"), ("95% CI", ""), ("p", "num")]
    out = ['<table class="sortable" id="comparisons"><thead><tr>']
    out += [f'<th class="{cls}" data-key="c-{i}">{_e(label)}</th>' for i, (label, cls) in enumerate(heads)]
    out.append("</tr></thead><tbody>")
    for c in lb.comparisons:
        d = c["mean_diff"]
        sign = "pos" if d and d > 0 else "neg" if d and d < 0 else ""
        out.append(
            f"<tr><td>{_e(c['task'])}</td>{_num(c['shots'])}"
            f"<td>{_e(c['a']['model'])} · {_e(c['a']['method'])}{_entry_budget(c['a'])}{_entry_run(lb, c['a'])}</td>"
            f"<td>{_e(c['b']['model'])} · {_e(c['b']['method'])}{_entry_budget(c['b'])}{_entry_run(lb, c['b'])}</td>"
            f"{_num(c['n_episodes'])}"
            f"{_num(c.get('n_dropped', 0))}"
            f'<td class="num {sign}" data-value="{_e(d)}">{d:+.3f}</td>'
            f"<td>[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]</td>"
            f'<td class="num" data-value="{_e(c["p_value"])}">{_e(format_p(c["p_value"]))}</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _figures(lb: Leaderboard, kind: FigureKind) -> str:
    """The double-column SVGs of one kind of paper figure (iclkit.export.figures), one per task."""
    images = paper_figures(lb, "double", formats=("svg",), kinds=(kind,))
    out = []
    for task in tasks_of(lb.rows):
        svg = images.get(figure_name(kind, task), {}).get("svg")
        if svg is not None:
            alt = f"{'forest plot' if kind == 'forest' else 'learning curves'}, {task}"
            out.append(f'<figure class="paper"><img alt="{_e(alt)}" '
                       f'src="data:image/svg+xml;base64,{base64.b64encode(svg).decode("ascii")}"></figure>')
    return '<div class="plots">' + "\n".join(out) + "</div>"


def _verified(run: Mapping[str, Any]) -> str:
    """The run's `iclkit verify` line, green when its certificate holds, red when it failed, plain without one."""
    check = run.get("verification") or {}
    cls = "pos" if check.get("passed") else "neg" if check and not check.get("stale") else "muted"
    return f'<span class="{cls} verified">{_e(run.get("verified") or "not verified")}</span>'


def html_report(lb: Leaderboard, *, title: str = "iclkit leaderboard") -> str:
    """The whole report as one HTML document."""
    runs = ", ".join(f"{_e(r['name'])} ({_e(r.get('model'))}, seed {_e(r.get('seed'))}; {_verified(r)})"
                     for r in lb.runs)
    forest = (f"""<p class="muted">Each method minus {_e(lb.reference)} on the same episodes: mean difference in episode
accuracy with its 95% CI (filled: p &lt; 0.05, two-sided paired permutation test); the numbers are the table's.</p>
{_figures(lb, "forest")}""" if lb.comparisons else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="muted">Runs: {runs}. Accuracy is the mean over episodes with a 95% percentile-bootstrap CI over
episodes; ECE is the expected calibration error of the predicted label's probability (10 bins). Click a column
header to sort.</p>
<h2>Learning curves</h2>
<p class="muted">Accuracy against shots per task, one panel per method family with {_e(lb.reference)} (black) in each;
bands are 95% CIs over episodes. Each figure is also written as PNG, SVG and PDF at one- and two-column widths by
<code>iclkit leaderboard ... --figures DIR</code>.</p>
{_figures(lb, "learning_curves")}
<h2>Results</h2>
<p class="muted">Meta-training data: the labelled texts (self-supervised: unlabelled) a method learned from outside
the episodes, and under which protocol (hover for its tasks and classes); ICL's model is only pretrained (its name
is in the model column).</p>
{_rows_table(lb)}
<h2>Paired comparisons</h2>
{forest}
<p class="muted">Accuracy differences on the same episodes (matched by episode hash); p from a two-sided paired
permutation test; unpaired: episodes only one of A and B ran, left out of the comparison. In parentheses: the
data each side meta-trained on outside the episodes (none, cross-task, class-split, in-task, or self-supervised:
unlabelled texts).</p>
{_comparisons_table(lb)}
{meta_validation_section(lb)}{_calibration_section(lb)}{_spread_section(lb)}{_uses_section(lb)}<script>{_JS}</script>
</body></html>
"""


register_format("html")(html_report)
