"""Data mixtures: named subsets of the clips (a `where` each), their sampling weights and the
targets each carries; exported as one bucketed shard set per subset plus the blend.

    [mixture]
    name = "demo-mix"
    [[mixture.subsets]]
    name = "video"            # shards under OUT/video/
    where = "video_duration_s >= 2"
    weight = 0.7
    type = "human video"      # what kind of data it is (for the card)
    tasks = ["captioning"]
    targets = ["video", "caption"]   # absent targets are masked by the loader, never faked

A sample that matches two subsets goes to the first that names it (reported).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from sila.errors import SilaError
from sila.recipe import load_recipe


@dataclass
class Subset:
    name: str
    where: str
    weight: float
    type: str = ""
    tasks: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


def load_mixture(recipe: str) -> tuple[str, list[Subset]]:
    doc = load_recipe(recipe).get("mixture")
    if not doc or not doc.get("subsets"):
        raise SilaError(f"recipe '{recipe}' has no [mixture] with [[mixture.subsets]]")
    subsets = []
    for i, s in enumerate(doc["subsets"]):
        try:
            subsets.append(
                Subset(
                    str(s["name"]),
                    str(s["where"]),
                    float(s["weight"]),
                    str(s.get("type", "")),
                    list(s.get("tasks", [])),
                    list(s.get("targets", [])),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise SilaError(f"mixture subset #{i + 1}: needs name, where and weight ({e})") from e
    names = [s.name for s in subsets]
    if len(set(names)) != len(names):
        raise SilaError(f"mixture subset names repeat: {names}")
    total = sum(s.weight for s in subsets)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise SilaError(f"mixture weights must sum to 1, got {total:g}")
    return str(doc.get("name", recipe)), subsets


def exclusive_wheres(subsets: list[Subset]) -> list[str]:
    """Each subset's where, minus every earlier subset's: first named wins."""
    out = []
    for i, s in enumerate(subsets):
        prior = " AND ".join(f"NOT coalesce(({p.where}), false)" for p in subsets[:i])
        out.append(f"({s.where})" + (f" AND {prior}" if prior else ""))
    return out


def export_mixture(lake, recipe: str, base_opts, *, progress=None) -> dict:
    """One export per subset under OUT/<subset>/ and the blend (Energon metadataset + JSON)."""
    from sila.export.select import resolve_where
    from sila.export.wds import ExportOptions, Out, run_export

    name, subsets = load_mixture(recipe)
    ds = lake.table(base_opts.table)
    results = []
    for s, where in zip(subsets, exclusive_wheres(subsets), strict=True):
        user = f"({base_opts.where}) AND " if base_opts.where else ""
        matched = ds.count_rows(
            filter=resolve_where(ds.schema, f"{user}({s.where})", base_opts.default_selection)
        )
        opts = ExportOptions(**{**vars(base_opts), "where": f"{user}{where}", "subset": s.name})
        man = run_export(lake, opts, progress=progress)
        hours = _hours(lake, base_opts.table, man)
        results.append(
            {
                "subset": s.name,
                "type": s.type,
                "tasks": s.tasks,
                "targets": s.targets,
                "weight": s.weight,
                "where": s.where,
                "samples": man["samples"],
                "bytes": man["bytes"],
                "hours": hours["hours"],
                "frames": hours["frames"],
                "claimed_by_earlier_subsets": matched - man["samples"]
                if matched >= man["samples"]
                else 0,
            }
        )
    blend = {"mixture": name, "subsets": results, "weights_sum": sum(s.weight for s in subsets)}
    out = Out(base_opts.out, base_opts.storage_options or lake.storage_options)
    out.put("mixture.json", json.dumps(blend, indent=1, sort_keys=True).encode())
    lines = [
        "__module__: megatron.energon",
        "__class__: MetadatasetV2",
        "splits:",
        "  train:",
        "    blend:",
    ]
    for r in results:
        if r["samples"]:
            lines += [
                f"      - weight: {r['weight']}",
                f"        path: {r['subset']}",
                "        subflavors:",
                f"          subset: {json.dumps(r['subset'])}",
            ]
    out.put("metadataset.yaml", ("\n".join(lines) + "\n").encode())
    return blend


def _hours(lake, table: str, manifest: dict) -> dict:
    ds = lake.table(table)
    names = set(ds.schema.names)
    dur = "video_duration_s" if "video_duration_s" in names else "duration_s"
    fps = "video_fps" if "video_fps" in names else "fps"
    where = manifest["selection"]
    if dur not in names:
        return {"hours": None, "frames": None}
    cols = [dur] + ([fps] if fps in names else [])
    t = ds.to_table(columns=cols, filter=where).to_pylist()
    secs = sum((r[dur] or 0) for r in t)
    frames = sum((r[dur] or 0) * (r.get(fps) or 0) for r in t) if fps in names else None
    return {"hours": round(secs / 3600, 4), "frames": int(frames) if frames is not None else None}
