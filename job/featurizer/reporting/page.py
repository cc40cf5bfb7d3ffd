"""report.json -> one self-contained HTML page (inline CSS, PNGs as data: URIs, no script)."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from html import escape
from typing import Any

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
  margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;
  border-bottom:1px solid #d8dbe2;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.sub{color:#5b6475;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#fff;border:1px solid #dfe2e8;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#5b6475;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #dfe2e8;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:24px}.cols>div{flex:1 1 320px}
img{max-width:100%;height:auto;background:#fff;border:1px solid #dfe2e8;border-radius:6px}
.ok{color:#1a7f37}.bad{color:#c62828}code{font-size:12px;word-break:break-all}
.note{color:#5b6475;font-size:12px}
td.bar{width:45%;padding:4px 6px}td.bar span{display:inline-block;height:10px}
"""
CLASS_ROWS = 150  # more classes than this: the largest and the smallest halves, then a gap
SPLIT_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")


def render(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """The page for a report (see reporting.build_report) and its PNG charts."""
    run = report["run"]
    sections = [
        _header(report),
        _run_section(report),
        _pca_section(report, images),
        _quality_section(report),
        _classes_section(report),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>featurizer report: {escape(str(run.get('output', '')))}</title>"
        f"<style>{STYLE}</style></head><body><main>\n"
        + "\n".join(s for s in sections if s)
        + "\n</main></body></html>\n"
    )


# ---- building blocks ---------------------------------------------------------------------


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'


def _table(
    head: Sequence[str] | None, rows: Iterable[Sequence[Any]], numeric: Collection[int] = ()
) -> str:
    header = (
        "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr></thead>"
        if head
        else ""
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=n' if i in numeric else ''}>{_cell(v)}</td>" for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table>{header}<tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _card(value: str, label: str) -> str:
    return f'<div class="card"><b>{escape(value)}</b><span>{escape(label)}</span></div>'


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.1%}"


# ---- sections ----------------------------------------------------------------------------


def _header(report: Mapping[str, Any]) -> str:
    run = report["run"]
    status = run.get("status", "unknown")
    css = "ok" if status == "succeeded" and report["complete"] else "bad"
    state = status if report["complete"] or status != "succeeded" else "incomplete (no _SUCCESS)"
    return (
        f"<h1>featurizer report</h1><p class=sub><code>{escape(str(run.get('output')))}"
        f"</code> &middot; run <b class={css}>{escape(state)}</b> &middot; report "
        f"generated {escape(report['generated_at'])}</p>"
    )


def _run_section(report: Mapping[str, Any]) -> str:
    run, errors = report["run"], report["errors"]
    counts = run.get("counts", {})
    speed = run.get("throughput", {})
    cards = [
        _card(f"{counts.get('found', 0):,}", "images found"),
        _card(f"{counts.get('featurized', 0):,}", "featurized"),
        _card(f"{counts.get('failed', 0):,}", "failed"),
        _card(f"{report['classes']['count']:,}", "classes"),
    ]
    if speed:
        cards.append(
            _card(f"{speed.get('featurize_images_per_s', 0):,.1f}", "images/s (featurize)")
        )
    if "total" in run.get("timings_s", {}):
        cards.append(_card(f"{run['timings_s']['total']:,.1f} s", "wall time"))
    parts = [
        "<h2>The run</h2>",
        f'<div class="cards">{"".join(cards)}</div>',
        f"<p>Input <code>{escape(str(run.get('input', 'unknown')))}</code></p>",
    ]
    if errors["top_reasons"]:
        parts += [
            "<h3>Why files failed</h3>",
            _table(
                ["reason", "files"], [(r["reason"], r["count"]) for r in errors["top_reasons"]], {1}
            ),
        ]
    blocks = []
    if run.get("timings_s"):
        blocks.append(
            "<h3>Timings per stage</h3>"
            + _table(["stage", "seconds"], list(run["timings_s"].items()), {1})
        )
    weights, engine = run.get("weights") or {}, run.get("engine") or {}
    setup = [
        ("weights", weights.get("name")),
        ("weights sha256", weights.get("sha256")),
        ("engine", engine.get("name")),
        ("batch size", engine.get("batch_size")),
        ("started", run.get("started_at")),
        ("finished", run.get("finished_at")),
    ]
    setup += [(f"spark {key}", value) for key, value in (run.get("spark") or {}).items()]
    blocks.append("<h3>Setup</h3>" + _table(None, [r for r in setup if r[1] is not None]))
    if run.get("versions"):
        blocks.append(
            "<h3>Versions</h3>" + _table(["package", "version"], list(run["versions"].items()))
        )
    parts.append('<div class="cols">' + "".join(f"<div>{b}</div>" for b in blocks) + "</div>")
    return "\n".join(parts)


def _pca_section(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    pca = report["pca"]
    if not pca:
        return ""
    target = pca.get("variance_target")
    chosen = (
        f"the smallest k reaching {target:.0%} of the variance" if target else "set with --pca-k"
    )
    return (
        f"<h2>PCA</h2><p>k = <b>{pca['k']}</b> components ({chosen}) explain "
        f"<b>{_pct(pca['variance_explained'])}</b> of the variance of the 1280-d features."
        f"</p>{_img(images.get('explained_variance'), 'cumulative explained variance')}"
        f"<h3>First two components, coloured by label</h3>"
        f"{_img(images.get('pca_scatter'), 'PC1 vs PC2 scatter by label')}"
    )


def _quality_section(report: Mapping[str, Any]) -> str:
    probe = report["probe"]
    if not probe.get("results"):
        return (
            "<h2>Quality: linear probe</h2><p class=note>"
            f"{escape(probe.get('skipped', 'not measured'))}</p>"
        )
    results = probe["results"]
    summary = _table(
        [
            "input",
            "dim",
            "train rows",
            "test rows",
            "train accuracy",
            "test accuracy",
            "classes at 100%",
            "seconds",
        ],
        [
            (
                name,
                r["dim"],
                r["train_rows"],
                r["test_rows"],
                _pct(r["train_accuracy"]),
                _pct(r["test_accuracy"]),
                f"{r['classes_perfect']} of {r['classes_evaluated']}",
                r["seconds"],
            )
            for name, r in results.items()
        ],
        {1, 2, 3, 4, 5, 7},
    )
    parts = [
        "<h2>Quality: linear probe</h2>",
        f"<p>Multinomial logistic regression of the label, fitted on the train rows and "
        f"measured on the test rows ({escape(probe['split'])}; L2 {probe['l2']:g}, "
        f"L-BFGS to a relative loss change of {probe['tolerance']:g}, standardized inputs).</p>",
        '<div class="cards">'
        + "".join(
            _card(_pct(r["test_accuracy"]), f"test accuracy from {name}")
            for name, r in results.items()
        )
        + "</div>",
        summary,
    ]
    for name, result in results.items():
        worst = _table(
            ["class", "test images", "accuracy", "most often taken for", "times"],
            [
                (
                    r["label"],
                    r["support"],
                    _pct(r["accuracy"]),
                    r["most_confused_with"],
                    r["confused_count"] or None,
                )
                for r in result["worst_classes"]
            ],
            {1, 2, 4},
        )
        pairs = (
            _table(
                ["true class", "predicted as", "images", "share of the class"],
                [
                    (p["true"], p["predicted"], p["count"], _pct(p["share_of_true"]))
                    for p in result["confused_pairs"]
                ],
                {2, 3},
            )
            if result["confused_pairs"]
            else "<p class=note>no mistakes</p>"
        )
        parts.append(
            f'<h3>From <code>{escape(name)}</code></h3><div class="cols">'
            f"<div><b>Worst {len(result['worst_classes'])} classes</b>{worst}</div>"
            f"<div><b>Most frequent confusions</b>{pairs}</div></div>"
        )
    return "\n".join(parts)


def _classes_section(report: Mapping[str, Any]) -> str:
    classes = report["classes"]
    if not classes["count"]:
        return ""
    return (
        f"<h2>Classes</h2><p>{classes['count']:,} classes; images per class: min "
        f"{classes['min']:,}, median {classes['median']:,}, max {classes['max']:,} "
        f"(largest / smallest = {classes['imbalance']:.1f}).</p>" + class_bars(classes["per_class"])
    )


def class_bars(per_class: Mapping[str, Mapping[str, int]], limit: int = CLASS_ROWS) -> str:
    """Images per class, largest first, as table rows with a bar stacked by split (e.g.
    Training / Test): names stay text (searchable, copyable), and no chart to draw."""
    totals = {label: sum(parts.values()) for label, parts in per_class.items()}
    ranked = sorted(totals, key=lambda label: (-totals[label], label))
    hidden = len(ranked) - limit
    order: list[str | None] = list(ranked)
    if hidden > 0:  # None: the row that says how many are left out
        order = [*ranked[: limit // 2], None, *ranked[len(ranked) - limit // 2 :]]
    sizes: Counter[str] = Counter()
    for parts in per_class.values():
        sizes.update(parts)
    splits = [split for split, _ in sizes.most_common()]
    colours = dict(zip(splits, SPLIT_COLOURS * len(splits)))
    largest = max(totals.values())
    head = ["class", *splits, "images", ""] if len(splits) > 1 else ["class", "images", ""]
    rows = []
    for label in order:
        if label is None:
            rows.append(f'<tr><td colspan="{len(head)}" class=note>{hidden:,} classes</td></tr>')
            continue
        parts = per_class[label]
        counts = [parts.get(split, 0) for split in splits] if len(splits) > 1 else []
        bar = "".join(
            f'<span style="width:{100 * parts.get(split, 0) / largest:.2f}%;'
            f'background:{colours[split]}" title="{escape(split)}"></span>'
            for split in splits
        )
        rows.append(
            f"<tr><td>{escape(label)}</td>"
            + "".join(f"<td class=n>{count:,}</td>" for count in (*counts, totals[label]))
            + f"<td class=bar>{bar}</td></tr>"
        )
    header = "".join(f"<th>{escape(name)}</th>" for name in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
