"""The evaluation report: a self-contained HTML page (plots embedded as base64 PNG) and a terminal table.

The page must open offline on a hospital workstation, so it links nothing: no scripts, no fonts, no
external images. Plots are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

MAP_NOTE = (
    "Ultralytics and pycocotools both sample the precision-recall curve at 101 recall points, but "
    "Ultralytics integrates those points with the trapezoid rule while pycocotools averages the step "
    "(right-continuous) precision values, so the same boxes give slightly different numbers; e.g. one of "
    "two objects found with precision 1: pycocotools 51/101 = 0.505, Ultralytics 0.495. pycocotools is "
    "the reference used in papers (COCO); Ultralytics is what training reports."
)


def fmt(v: Any, digits: int = 3) -> str:
    """A metric as tables show it: `digits` decimals, "n/a" for None or NaN (undefined), a CI pair as [lo, hi].

    The one number formatter of the terminal tables, the report and cv's lines."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (float, type(None))) for x in v):
        return f"[{fmt(v[0], digits)}, {fmt(v[1], digits)}]"
    return str(v)


def _ci(ci: Any, summary: dict[str, Any]) -> str:
    """A CI with what it resampled: '[0.547, 0.602] over 31 independent units (1,505 films)'."""
    if summary.get("n_units") is None or any(v is None or math.isnan(v) for v in ci):  # old metrics.json, or no CI
        return fmt(ci)
    return f"{fmt(ci)} over {summary['n_units']:,} independent units ({summary['n']:,} films)"


def summary_table(metrics: dict[str, Any]) -> Table:
    """The short terminal table: headline numbers of each evaluated model."""
    table = Table(
        title=f"fracturekit evaluate: split '{metrics['split']}' (threshold from '{metrics['threshold_split']}')"
    )
    table.add_column("model")
    table.add_column("metric")
    table.add_column("value", justify="right")
    c = metrics.get("classification")
    if c:
        rows = [("n images (positive)", f"{c.get('n')} ({c.get('n_positive', 'n/a')})"), ("AUROC", fmt(c["auroc"]))]
        if c.get("positive_class"):
            rows += [
                ("AUROC 95% CI", _ci(c["auroc_ci95"], c)),
                ("average precision", fmt(c["average_precision"])),
                (f"threshold ({c['threshold_method']})", fmt(c["threshold"])),
                ("sensitivity", fmt(c["sensitivity"])),
                ("specificity", fmt(c["specificity"])),
                ("sens @ spec 0.90", fmt(c["sens_at_spec"]["0.90"])),
            ]
        else:
            rows += [("micro AUROC", fmt(c["micro_auroc"])), ("accuracy", fmt(c["accuracy"]))]
        rows += [
            ("temperature", fmt(c["temperature"], 2)),
            ("ECE before -> after", f"{fmt(c['ece_before'])} -> {fmt(c['ece_after'])}"),
        ]
        for i, (k, v) in enumerate(rows):
            table.add_row("classifier" if i == 0 else "", k, v)
    d = metrics.get("detection")
    if d:
        rows = [
            ("n images (with boxes)", f"{d['n_images']} ({d['image_level']['n_positive']})"),
            ("mAP50-95 Ultralytics / pycocotools", f"{fmt(d['map50_95'])} / {fmt(d['pycocotools']['map50_95'])}"),
            ("mAP50 Ultralytics / pycocotools", f"{fmt(d['map50'])} / {fmt(d['pycocotools']['map50'])}"),
            ("mAP50-95 difference", fmt(d["map_difference"]["map50_95"], 4)),
            ("precision / recall", f"{fmt(d['precision'])} / {fmt(d['recall'])}"),
            ("image AUROC (max box conf)", fmt(d["image_auroc"])),
            ("image AUROC 95% CI", _ci(d["image_auroc_ci95"], d["image_level"])),
        ]
        for i, (k, v) in enumerate(rows):
            table.add_row("detector" if i == 0 else "", k, v)
    return table


# ------------------------------------------------------------------ plots


def _png_data_uri(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_pr_figure(curves: dict[str, dict[str, np.ndarray]]) -> str:
    """ROC and precision-recall curves (sklearn points) for each binary scorer, as a data URI."""
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    plt = _pyplot()
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.5))
    for name, c in curves.items():
        y, s = np.asarray(c["y"]), np.asarray(c["score"])
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax_roc.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
        prec, rec, _ = precision_recall_curve(y, s)
        ax_pr.step(rec, prec, where="post", label=name)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=1)
    ax_roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "lower left")
        ax.grid(alpha=0.3)
    return _png_data_uri(fig)


def reliability_figure(rel: dict[str, Any]) -> str:
    """Reliability diagram (top-label confidence vs accuracy) before and after temperature scaling."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for key, style in (("before", "o-"), ("after", "s-")):
        b = rel[key]
        used = np.asarray(b["count"]) > 0
        ece = rel[f"ece_{key}"]
        ax.plot(
            np.asarray(b["confidence"])[used],
            np.asarray(b["accuracy"])[used],
            style,
            label=f"{key} temperature scaling (ECE {fmt(ece)})",
        )
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
    ax.set(xlabel="confidence (top class)", ylabel="accuracy", title="Reliability", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png_data_uri(fig)


def confusion_figure(matrix: list[list[int]], labels: list[str]) -> str:
    """Confusion matrix (rows = truth, columns = prediction) with counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_yticklabels(labels)
    ax.set_title("Confusion matrix (at the threshold)")
    return _png_data_uri(fig)


# ------------------------------------------------------------------ HTML

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.note{color:#555;max-width:900px}
img{max-width:100%}.warn{background:#fff4e5;border-left:4px solid #e67700;padding:.5em 1em;margin:1em 0}
.prov td{text-align:left}.small{color:#a61e4d;font-weight:bold}
.cases{display:flex;flex-wrap:wrap;gap:12px}.cases figure{margin:0;width:520px}.cases figure.wide{width:100%}
.cases figcaption{font-size:.85em;color:#444}"""
# What each kind of case is, for the report (fracturekit.evaluation.cases decides membership and order).
CASE_KINDS = {
    "false_negative": "Missed fractures (false negatives), most confident miss (lowest score) first",
    "false_positive": "False alarms (false positives), most confident (highest score) first",
    "worst_localised": "Found, but boxes in the wrong place: lowest IoU between a fracture and the best box first",
    "true_positive": "Fractures found (examples), highest score first",
}


def _kv_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(fmt(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _subgroup_table(subgroups: dict[str, dict[str, Any]], keys: list[str]) -> str:
    parts = []
    for col, values in subgroups.items():
        head = "".join(f"<th>{html.escape(k)}</th>" for k in ["n", "n_positive", *keys])
        rows = ""
        for value, m in values.items():
            if m.get("too_few_to_judge"):
                rows += f"<tr><td>{html.escape(str(value))} <span class='small'>too few to judge</span></td>"
                rows += "".join(f"<td>{html.escape(fmt(c))}</td>" for c in [m.get("n"), m.get("n_positive")])
                rows += f"<td colspan='{len(keys)}'>not shown: too few films or positives</td></tr>"
                continue
            cells = [m.get("n"), m.get("n_positive")]
            for k in keys:
                v: Any = m
                for part in k.split("."):
                    v = v.get(part) if isinstance(v, dict) else None
                cells.append(v)
            rows += f"<tr><td>{html.escape(str(value))}</td>" + "".join(
                f"<td>{html.escape(fmt(c))}</td>" for c in cells
            )
            rows += "</tr>"
        parts.append(f"<h3>by {html.escape(col)}</h3><table><tr><th>{html.escape(col)}</th>{head}</tr>{rows}</table>")
    return "".join(parts)


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _source(section: dict[str, Any]) -> str:
    """Where a model's numbers come from: its run folder, or an outside model's name and scores files."""
    outside = section.get("outside")
    if outside:
        files = ", ".join(f"<code>{html.escape(f['path'])}</code>" for f in outside["scores"])
        return f"Outside model <b>{html.escape(outside['name'])}</b>, scores {files}"
    return f"Run <code>{html.escape(str(section['run']))}</code>"


def provenance_table(prov: dict[str, Any]) -> str:
    """The report header's provenance: versions, date, dataset + data_hash, split, runs + their data_hash."""
    rows = [
        ("date (UTC)", prov.get("date")),
        ("versions", ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())),
        (
            "dataset",
            f"{(prov.get('dataset') or {}).get('path')}  data_hash {(prov.get('dataset') or {}).get('data_hash')}",
        ),
        ("split", prov.get("split")),
    ]
    for k, r in (prov.get("runs") or {}).items():
        if "scores" in r:  # an outside model: its scores files stand where a run would
            files = ", ".join(f"{f['path']} sha256 {f['sha256']}" for f in r["scores"])
            rows.append((f"{k} scores ({r.get('name')})", f"{files}; training films: {r.get('seen') or 'not given'}"))
        else:
            rows.append((f"{k} run", f"{r.get('path')}  data_hash {r.get('data_hash')}"))
    skip = ("date", "versions", "dataset", "split", "runs", "train_overlap_examples")
    extra = [(k, v) for k, v in prov.items() if k not in skip]
    rows += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in extra]  # keys other stages add
    body = "".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows)
    return f"<table class='prov'>{body}</table>"


def _cases_section(cases: Any, folder: Path) -> str:
    """'Cases to review': each kind's pictures (embedded JPEGs) in review order, with path, score and IoU."""
    from PIL import Image

    parts = [
        "<h2 id='cases'>Cases to review</h2><p class='note'>The films behind the numbers, at the threshold chosen "
        "on validation: green boxes are the ground truth, amber the predicted boxes at or above the threshold "
        "(with confidences), grey the best box when none reaches it. The classifier's EigenCAM is shown beside "
        "the film; it is hatched outside the centre square, which the classifier never sees. Every case is listed "
        "in <code>cases.csv</code>; pictures are in <code>cases/</code>.</p>"
    ]
    for model in ("classifier", "detector"):
        for kind, title in CASE_KINDS.items():
            sel = cases[(cases["model"] == model) & (cases["kind"] == kind)]
            if not len(sel):
                continue
            figures = ""
            for r in sel.itertuples():
                raw = (folder / r.picture).read_bytes()
                data = base64.b64encode(raw).decode("ascii")
                with Image.open(io.BytesIO(raw)) as im:  # film + CAM side by side: a row of its own, legible
                    wide = " class='wide'" if im.width > im.height else ""
                iou = "" if r.iou is None or (isinstance(r.iou, float) and math.isnan(r.iou)) else f", IoU {r.iou:.2f}"
                figures += (
                    f"<figure{wide}><img src='data:image/jpeg;base64,{data}' alt='{html.escape(r.path)}'>"
                    f"<figcaption><code>{html.escape(r.path)}</code>: score {r.score:.3f} "
                    f"(threshold {r.threshold:.3f}){iou}</figcaption></figure>"
                )
            parts.append(f"<h3>{model}: {html.escape(title)}</h3><div class='cases'>{figures}</div>")
    return "".join(parts)


def write_report(metrics: dict[str, Any], plots: dict[str, Any], path: Path, pictures: Path | None = None) -> Path:
    """Write the self-contained report.html for `metrics` (as in metrics.json) and the raw plot data.

    plots: "curves" (name -> {"y", "score"} for ROC/PR), "reliability" (reliability_bins before/after
    and the two ECEs), "cls_confusion" ({"matrix", "labels"}), "cases" (the cases.csv rows that have a
    picture, read from `pictures`/cases/ and embedded); each is optional.
    """
    parts = [
        f"<h1>fracturekit evaluation</h1><p>Data <code>{html.escape(str(metrics['data']))}</code>, split "
        f"<b>{html.escape(metrics['split'])}</b>; threshold and temperature chosen on "
        f"<b>{html.escape(metrics['threshold_split'])}</b> and applied unchanged.</p>"
    ]
    if metrics.get("provenance"):
        parts.append(provenance_table(metrics["provenance"]))
    parts += _warnings_section(metrics)
    cases = plots.get("cases")
    if cases is not None and len(cases):
        parts.append("<p><a href='#cases'>Cases to review</a>: the films the models got most confidently wrong.</p>")
    if plots.get("curves"):
        figure = roc_pr_figure(plots["curves"])
        parts.append("<h2>ROC and precision-recall (image level)</h2>" + _img(figure, "ROC and PR"))
    if metrics.get("classification"):
        parts += _classifier_section(metrics["classification"], plots)
    if metrics.get("detection"):
        parts += _detector_section(metrics["detection"])
    if cases is not None and len(cases) and pictures is not None:
        parts.append(_cases_section(cases, Path(pictures)))
    if metrics.get("skipped"):
        items = "".join(f"<li>{html.escape(s['path'])}: {html.escape(s['reason'])}</li>" for s in metrics["skipped"])
        parts.append(f"<h2>Skipped files</h2><ul>{items}</ul>")
    return _write_page("fracturekit evaluation", parts, path)


def _warnings_section(metrics: dict[str, Any]) -> list[str]:
    """The report's warnings box (a seen-film overlap first) and the note on what the CIs resample."""
    parts = []
    warns = list(metrics.get("warnings") or ([metrics["warning"]] if metrics.get("warning") else []))
    overlap = (metrics.get("provenance") or {}).get("train_overlap", 0)
    if overlap != 0:
        warns.insert(
            0,
            f"{overlap} scored films are copies of films the model(s) trained or validated on (--allow-overlap): "
            "these numbers are optimistic."
            if overlap
            else "a model has no record of the films it trained on (a run without seen.csv, or --scores without "
            "--seen): whether scored films were seen in training was not checked.",
        )
    if warns:
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warns)
        parts.append(f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>")
    units = metrics.get("units")
    if units:
        linked = " or ".join(f"<code>{html.escape(c)}</code>" for c in units["linked_by"]) or "nothing"
        parts.append(
            "<p class='note'>Confidence intervals resample independent units, not films: films sharing a "
            f"manifest {linked} value are drawn together, since copies of a film or films of one patient are "
            "not independent evidence.</p>"
        )
        if units.get("warning"):
            parts.append(f"<p><b>Warning:</b> {html.escape(units['warning'])}</p>")
    return parts


def _classifier_section(c: dict[str, Any], plots: dict[str, Any]) -> list[str]:
    """The classifier's numbers, confusion matrix, reliability diagram and subgroup table."""
    parts = [f"<h2>Classifier</h2><p>{_source(c)}, classes {c['classes']}.</p>"]
    rows: list[tuple[str, Any]] = [("images", c.get("n")), ("AUROC", c["auroc"])]
    if c.get("positive_class"):
        rows += [
            ("positive images", c["n_positive"]),
            ("AUROC 95% CI (bootstrap over independent units)", _ci(c["auroc_ci95"], c)),
            ("average precision", c["average_precision"]),
            (f"threshold ({c['threshold_method']}, on calibrated probability)", c["threshold"]),
            ("sensitivity", c["sensitivity"]),
            ("specificity", c["specificity"]),
            ("precision (PPV)", c["precision"]),
            ("F1", c["f1"]),
            *[(f"sensitivity at specificity {k}", v) for k, v in c["sens_at_spec"].items()],
        ]
    else:
        rows += [("macro AUROC", c["macro_auroc"]), ("micro AUROC", c["micro_auroc"]), ("accuracy", c["accuracy"])]
        rows += [(f"AUROC {k} vs rest", v) for k, v in c["per_class"].items()]
    rows += [("temperature", c["temperature"]), ("ECE before", c["ece_before"]), ("ECE after", c["ece_after"])]
    parts.append(_kv_table(rows))
    if "cls_confusion" in plots:
        cm = plots["cls_confusion"]
        parts.append(_img(confusion_figure(cm["matrix"], cm["labels"]), "confusion matrix"))
    if "reliability" in plots:
        parts.append(_img(reliability_figure(plots["reliability"]), "reliability diagram"))
    if c.get("subgroups"):
        keys = (
            ["n_units", "auroc", "average_precision", "sensitivity", "specificity", "precision", "f1", "ece_after"]
            if c.get("positive_class")
            else ["macro_auroc", "micro_auroc", "ece_after"]
        )
        parts.append("<h2>Classifier by subgroup</h2>" + _subgroup_table(c["subgroups"], keys))
    return parts


def _detector_section(d: dict[str, Any]) -> list[str]:
    """The detector's mAP both ways, its image-level numbers and its subgroup table."""
    parts = [f"<h2>Detector</h2><p>{_source(d)}, classes {d['classes']}.</p>"]
    parts.append(
        "<table><tr><th></th><th>Ultralytics val</th><th>pycocotools COCOeval</th><th>difference</th></tr>"
        + "".join(
            f"<tr><td>{label}</td><td>{fmt(d[k])}</td><td>{fmt(d['pycocotools'][k])}</td>"
            f"<td>{fmt(d['map_difference'][k], 4)}</td></tr>"
            for label, k in (("mAP@0.5:0.95", "map50_95"), ("mAP@0.5", "map50"))
        )
        + "</table>"
    )
    parts.append(f"<p class='note'>Same boxes scored twice. {html.escape(MAP_NOTE)}</p>")
    il = d["image_level"]
    parts.append(
        _kv_table(
            [
                ("images / with boxes / boxes", f"{d['n_images']} / {il['n_positive']} / {d['n_boxes']}"),
                ("precision / recall (Ultralytics)", f"{fmt(d['precision'])} / {fmt(d['recall'])}"),
                *[(f"AP {k}", v) for k, v in d["per_class_ap"].items()],
                ("image AUROC (score = max box confidence, 0 without box)", d["image_auroc"]),
                ("image AUROC 95% CI (bootstrap over independent units)", _ci(d["image_auroc_ci95"], il)),
                ("image average precision", d["image_average_precision"]),
                (f"image threshold ({d['threshold_method']})", d["threshold"]),
                ("image sensitivity", il["sensitivity"]),
                ("image specificity", il["specificity"]),
                *[(f"image sensitivity at specificity {k}", v) for k, v in il["sens_at_spec"].items()],
            ]
        )
    )
    if d.get("subgroups"):
        keys = ["n_units", "pycocotools.map50_95", "pycocotools.map50", "auroc", "sensitivity", "specificity"]
        parts.append("<h2>Detector by subgroup</h2>" + _subgroup_table(d["subgroups"], keys))
    return parts


def _write_page(title: str, parts: list[str], path: Path) -> Path:
    """One self-contained HTML page (styles inline, pictures embedded) from its parts."""
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def write_cv_report(cv: dict[str, Any], oof: Any, path: Path) -> Path:
    """Write the cross-validation report.html: per-fold ROC curves, the fold table, mean ± sd, pooled OOF, comparison.

    cv: cv.json's content; oof: oof_predictions.csv as a DataFrame (path, label, fold, model, score).
    """
    s = cv["settings"]
    detect = s["task"] == "detect"
    auc_key = "image_auroc" if detect else "auroc"
    cols = [("n (positive)", None), ("AUROC" if not detect else "image AUROC", auc_key)]
    cols += [("AUROC 95% CI", f"{auc_key}_ci95"), ("threshold (val fold)", "threshold")]
    cols += [("sensitivity", "sensitivity"), ("specificity", "specificity")]
    if detect:
        cols += [("mAP@0.5:0.95", "map50_95"), ("mAP@0.5", "map50")]
    parts = [
        "<h1>fracturekit cross-validation</h1>"
        f"<p>Data <code>{html.escape(s['data'])}</code>, task <b>{html.escape(s['task'])}</b>, {s['folds']} folds "
        f"(seed {s['seed']}), stratified by label and grouped by patient and duplicate cluster. "
        f"Roles: {html.escape(s['roles'])}. Test split: {html.escape(s['test_split'])}.</p>"
    ]
    for model in cv["models"]:
        part = oof[oof["model"] == model]
        curves = {
            f"fold {k}": {"y": (g["label"] == "fracture").astype(int).to_numpy(), "score": g["score"].to_numpy()}
            for k, g in part.groupby("fold")
        }
        curves["pooled out-of-fold"] = {
            "y": (part["label"] == "fracture").astype(int).to_numpy(),
            "score": part["score"].to_numpy(),
        }
        parts.append(f"<h2>Model {html.escape(str(model))}</h2>" + _img(roc_pr_figure(curves), f"ROC {model}"))
        head = "".join(f"<th>{html.escape(c)}</th>" for c, _ in cols)
        rows = []
        for f in (f for f in cv["folds"] if f["model"] == model):
            cells = [f"{f['n']} ({f['n_positive']})", *[fmt(f.get(k)) for _, k in cols[1:]]]
            rows.append(
                f"<tr><td>fold {f['fold']} (val {f['val_fold']})</td>"
                + "".join(f"<td>{c}</td>" for c in cells)
                + "</tr>"
            )
        mean, std = cv["mean"][model], cv["std"][model]
        cells = ["", *[f"{fmt(mean[k])} ± {fmt(std[k])}" if k in mean else "" for _, k in cols[1:]]]
        rows.append("<tr><td><b>mean ± sd</b></td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        o = cv["oof"][model]
        cells = [f"{o['n']} ({o['n_positive']})", fmt(o["auroc"]), fmt(o["auroc_ci95"])]
        rows.append("<tr><td><b>pooled out-of-fold</b></td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append(f"<table><tr><th>fold</th>{head}</tr>{''.join(rows)}</table>")
        parts.append(f"<p class='note'>sd: {html.escape(cv['std_note'])}. Pooled score: {html.escape(o['score'])}.</p>")
    for c in cv.get("comparison", []):
        verdict = "significant" if c["significant"] else "not significant"
        parts.append(
            f"<h2>{html.escape(c['a'])} vs {html.escape(c['b'])}</h2>"
            + _kv_table(
                [
                    (f"pooled out-of-fold AUROC {c['a']} / {c['b']}", f"{fmt(c['auroc_a'])} / {fmt(c['auroc_b'])}"),
                    ("difference (a - b), 95% CI", f"{fmt(c['difference'])} {fmt(c['difference_ci95'])}"),
                    ("p-value (two-sided)", fmt(c["p_value"], 4)),
                    ("at the 5% level", verdict),
                    ("test", c.get("method", "n/a")),
                    ("per-fold differences", ", ".join(fmt(d) for d in c["per_fold_difference"])),
                    (f"folds where {c['a']} is better", f"{c['folds_a_better']} of {c['n_folds']}"),
                ]
            )
        )
    return _write_page("fracturekit cross-validation", parts, path)
