"""`sila card OUT`: a dataset card with what a post-training recipe states: input types,
resolution/aspect and duration/FPS distributions, encoding, caption format and coverage, filter
pass rates by reason, duplicate rate, per-source and per-embodiment breakdowns, split sizes and
the leakage audit, the mixture table, sample thumbnails. Markdown + PNG plots + Croissant
JSON-LD (validated with `mlcroissant` when it is installed)."""

from __future__ import annotations

import json
import os
import statistics

from sila.export.buckets import recipe_buckets
from sila.recipe import load_recipe


def _q(lake, sql: str) -> list[dict]:
    try:
        return lake.sql(sql).to_pylist()
    except Exception:  # noqa: BLE001 - a section whose columns are missing is left out
        return []


def _stats(values: list[float]) -> dict:
    v = sorted(x for x in values if x is not None)
    if not v:
        return {}
    return {
        "n": len(v),
        "min": round(v[0], 3),
        "median": round(statistics.median(v), 3),
        "mean": round(statistics.fmean(v), 3),
        "max": round(v[-1], 3),
    }


def collect(
    lake, *, recipe: str | None = None, label: str | None = None, mixture: dict | None = None
) -> dict:
    card: dict = {"lake": lake.uri, "tables": {}}
    for name in lake.tables():
        ds = lake.table(name)
        card["tables"][name] = {
            "rows": ds.count_rows(),
            "version": ds.version,
            "columns": ds.schema.names,
        }
    card["input_types"] = _q(
        lake, "select media_kind, count(*) as n from sources group by 1 order by 2 desc"
    )
    card["source_codecs"] = _q(
        lake,
        "select video_codec, count(*) as n from sources where video_codec is not null group by 1 order by 2 desc",
    )
    cols = set(card["tables"].get("clips", {}).get("columns", []))
    if not cols:
        return card
    w, h = ("video_width", "video_height") if "video_width" in cols else ("width", "height")
    d = "video_duration_s" if "video_duration_s" in cols else "duration_s"
    f = "video_fps" if "video_fps" in cols else "fps"
    sel = [c for c in (w, h, d, f) if c in cols]
    rows = lake.table("clips").to_table(columns=sel).to_pylist() if sel else []
    b = recipe_buckets(load_recipe(recipe))
    res: dict[str, int] = {}
    asp: dict[str, int] = {}
    for r in rows:
        k = b.resolution(r.get(w), r.get(h)) or "unknown"
        res[k] = res.get(k, 0) + 1
        a = b.aspect_of(r.get(w), r.get(h)) or "unknown"
        asp[a] = asp.get(a, 0) + 1
    card["resolution"] = res
    card["aspect"] = asp
    card["duration_s"] = _stats([r.get(d) for r in rows])
    card["fps"] = _stats([r.get(f) for r in rows])
    card["durations"] = [r.get(d) for r in rows if r.get(d) is not None]
    card["encoding"] = (
        "H.264 yuv420p mp4 (canonical transcode)" if "video" in cols else "as ingested"
    )
    if "caption_json" in cols:
        cov = _q(lake, "select count(caption_json) as captioned, count(*) as n from clips")
        card["captions"] = {
            "format": "structured JSON (see CAPTION_SCHEMA)",
            **(cov[0] if cov else {}),
        }
    reasons = {}
    for c in sorted(cols):
        if c.endswith("_reasons"):
            stage = c[: -len("_reasons")]
            reasons[stage] = {
                "kept": _q(
                    lake, f"select {stage}_keep as keep, count(*) as n from clips group by 1"
                ),
                "reasons": _q(
                    lake,
                    f"select r as reason, count(*) as n from clips, unnest({c}) as t(r) group by 1 order by 2 desc",
                ),
            }
    card["filters"] = reasons
    if "dedup_keep" in cols:
        x = _q(
            lake,
            "select count(*) filter (where dedup_keep = false) as duplicates, count(dedup_keep) as n from clips",
        )
        if x and x[0]["n"]:
            card["duplicate_rate"] = round(x[0]["duplicates"] / x[0]["n"], 4)
    for col, key in (("meta_source", "per_source"), ("embodiment", "per_embodiment")):
        for t in ("clips", "sources"):
            if col in card["tables"].get(t, {}).get("columns", []):
                card[key] = _q(
                    lake,
                    f"select {col} as value, count(*) as n from {t} group by 1 order by 2 desc",
                )
                break
    if "split" in cols:
        from sila.export.splits_audit import leakage_audit

        card["splits"] = leakage_audit(lake, label=label)
    if mixture:
        card["mixture"] = mixture
    return card


def _plot(path: str, title: str, data: dict | list, kind: str = "bar") -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    if kind == "hist":
        ax.hist(data, bins=20, color="#4a7ab5")
    else:
        ax.bar([str(k) for k in data], list(data.values()), color="#4a7ab5")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return os.path.basename(path)


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return ["(none)"]
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(str(r.get(k)) for k in keys) + " |" for r in rows]
    return out


def write_card(
    lake,
    out: str,
    *,
    recipe: str | None = None,
    label: str | None = None,
    mixture: dict | None = None,
    thumbnails: int = 4,
) -> dict:
    os.makedirs(out, exist_ok=True)
    c = collect(lake, recipe=recipe, label=label, mixture=mixture)
    md = [
        f"# Dataset card: {os.path.basename(lake.uri.rstrip('/'))}",
        "",
        f"Lake `{lake.uri}`; tables: "
        + ", ".join(f"{k} ({v['rows']} rows, v{v['version']})" for k, v in c["tables"].items()),
        "",
        "## Input types",
        *_table(c.get("input_types", [])),
        "",
    ]
    if c.get("source_codecs"):
        md += ["Source codecs:", *_table(c["source_codecs"]), ""]
    if "resolution" in c:
        plots = [
            _plot(os.path.join(out, "resolution.png"), "short side", c["resolution"]),
            _plot(os.path.join(out, "aspect.png"), "aspect", c["aspect"]),
            _plot(os.path.join(out, "duration.png"), "duration (s)", c["durations"], "hist"),
        ]
        md += [
            "## Resolution, aspect, duration, FPS",
            f"Encoding: {c['encoding']}.",
            "",
            f"Duration (s): {c['duration_s']}",
            "",
            f"FPS: {c['fps']}",
            "",
        ]
        md += [f"![{p}]({p})" for p in plots if p] + [""]
    if "captions" in c:
        md += ["## Captions", f"{c['captions']}", ""]
    if c.get("filters"):
        md += ["## Filters: pass rates and reasons"]
        for stage, v in c["filters"].items():
            md += [f"### {stage}", *_table(v["kept"]), "", *_table(v["reasons"]), ""]
    if "duplicate_rate" in c:
        md += ["## Duplicates", f"Duplicate rate: {c['duplicate_rate']:.2%}", ""]
    from sila.export.select import random_weight_warnings

    if lake.has_table("clips"):
        warn = random_weight_warnings(lake.table("clips").schema, None)
        c["warnings"] = warn
        if warn:
            md += ["## Caveats", *[f"- {w}" for w in warn], ""]
    for key, title in (("per_source", "Per source"), ("per_embodiment", "Per embodiment")):
        if c.get(key):
            md += [f"## {title}", *_table(c[key]), ""]
    if "splits" in c:
        s = c["splits"]
        md += [
            "## Splits and leakage audit",
            *_table([{"split": k, **v} for k, v in s["splits"].items()]),
            "",
            f"Groups in two splits: {s['groups_in_two_splits']} (must be 0); near-duplicate "
            f"pairs across splits: {s['near_duplicate_pairs_across_splits']}.",
            "",
        ]
        if "label" in s:
            md += [
                f"Label coverage ({s['label']['column']}): {s['label']['classes_per_split']}; "
                f"classes unseen in train: {s['label']['unseen_in_train']}",
                "",
            ]
    if mixture:
        md += [
            "## Mixture",
            f"Weights sum to {mixture['weights_sum']:g}.",
            *_table(
                [
                    {
                        k: r[k]
                        for k in (
                            "subset",
                            "type",
                            "samples",
                            "frames",
                            "hours",
                            "tasks",
                            "weight",
                            "targets",
                        )
                    }
                    for r in mixture["subsets"]
                ]
            ),
            "",
        ]
    md += _thumbs(lake, out, thumbnails)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    croissant = _croissant(lake, c)
    with open(os.path.join(out, "croissant.json"), "w") as f:
        json.dump(croissant, f, indent=1)
    c["croissant_valid"] = _validate(os.path.join(out, "croissant.json"))
    c.pop("durations", None)
    with open(os.path.join(out, "card.json"), "w") as f:
        json.dump(c, f, indent=1, default=str)
    return c


def _thumbs(lake, out: str, n: int) -> list[str]:
    if not lake.has_table("sources") or "thumbnail" not in lake.table("sources").schema.names:
        return []
    t = lake.table("sources").to_table(
        columns=["id", "thumbnail"], filter="thumbnail IS NOT NULL", limit=n
    )
    lines = ["## Samples"]
    for i, (sid, data) in enumerate(
        zip(t["id"].to_pylist(), t["thumbnail"].to_pylist(), strict=True)
    ):
        ext = "png" if data[:4] == b"\x89PNG" else "jpg"
        name = f"sample-{i}.{ext}"
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        lines.append(f"![{sid[:12]}]({name})")
    return lines + [""]


def _croissant(lake, c: dict) -> dict:
    fields = []
    for name, t in c["tables"].items():
        fields.append(
            {
                "@type": "cr:RecordSet",
                "@id": name,
                "name": name,
                "field": [
                    {
                        "@type": "cr:Field",
                        "@id": f"{name}/{col}",
                        "name": col,
                        "dataType": "sc:Text",
                        "source": {"fileSet": {"@id": "parquet-files"}, "extract": {"column": col}},
                    }
                    for col in t["columns"][:50]
                    if col != "media"
                ],
            }
        )
    return {
        "@context": {
            "@language": "en",
            "@vocab": "https://schema.org/",
            "sc": "https://schema.org/",
            "cr": "http://mlcommons.org/croissant/",
            "dct": "http://purl.org/dc/terms/",
            "citeAs": "cr:citeAs",
            "column": "cr:column",
            "conformsTo": "dct:conformsTo",
            "data": {"@id": "cr:data", "@type": "@json"},
            "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
            "extract": "cr:extract",
            "field": "cr:field",
            "fileObject": "cr:fileObject",
            "fileSet": "cr:fileSet",
            "format": "cr:format",
            "includes": "cr:includes",
            "recordSet": "cr:recordSet",
            "source": "cr:source",
            "examples": {"@id": "cr:examples", "@type": "@json"},
            "fileProperty": "cr:fileProperty",
            "equivalentProperty": "cr:equivalentProperty",
            "isLiveDataset": "cr:isLiveDataset",
            "jsonPath": "cr:jsonPath",
            "key": "cr:key",
            "md5": "cr:md5",
            "parentField": "cr:parentField",
            "path": "cr:path",
            "rai": "http://mlcommons.org/croissant/RAI/",
            "references": "cr:references",
            "regex": "cr:regex",
            "repeated": "cr:repeated",
            "replace": "cr:replace",
            "samplingRate": "cr:samplingRate",
            "separator": "cr:separator",
            "subField": "cr:subField",
            "transform": "cr:transform",
        },
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": os.path.basename(lake.uri.rstrip("/")) or "sila-lake",
        "description": "Curated with SILA: one wide Lance table per entity.",
        "url": "https://example.invalid/sila-lake",
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "citeAs": "SILA curation export",
        "version": "1.0.0",
        "datePublished": "2026-01-01",
        "distribution": [
            {
                "@type": "cr:FileSet",
                "@id": "parquet-files",
                "name": "parquet-files",
                "encodingFormat": "application/x-parquet",
                "includes": "*.parquet",
            }
        ],
        "recordSet": fields,
    }


def _validate(path: str) -> bool | None:
    try:
        import mlcroissant as mlc
    except ImportError:
        return None
    try:
        mlc.Dataset(path)
        return True
    except Exception as e:  # noqa: BLE001 - reported, the card is still written
        import logging

        logging.getLogger(__name__).warning("croissant validation: %s", str(e)[:500])
        return False
