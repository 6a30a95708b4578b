"""The leakage audit of a split assignment: no group in two splits, near-duplicates across
splits reported, and label coverage per split (classes a split holds that train never saw)."""

from __future__ import annotations

from sila.errors import SilaError


def leakage_audit(
    lake,
    table: str = "clips",
    split_column: str = "split",
    group_column: str = "split_group",
    label: str | None = None,
    where: str | None = None,
) -> dict:
    ds = lake.table(table)
    names = set(ds.schema.names)
    if split_column not in names:
        raise SilaError(
            f"{table} has no '{split_column}' column: run `sila run assign_split` first"
        )
    group_column = group_column if group_column in names else "source_id"
    cols = ["id", split_column, group_column]
    dup = "dedup_of" in names
    if dup:
        cols.append("dedup_of")
    if label:
        if label not in names:
            raise SilaError(f"label column '{label}' is not in {table}")
        cols.append(label)
    rows = ds.to_table(columns=list(dict.fromkeys(cols)), filter=where).to_pylist()
    split_of = {r["id"]: r[split_column] for r in rows}
    groups: dict[str, set] = {}
    for r in rows:
        groups.setdefault(r[group_column], set()).add(r[split_column])
    per_split: dict[str, dict] = {}
    for r in rows:
        s = per_split.setdefault(str(r[split_column]), {"rows": 0, "groups": set()})
        s["rows"] += 1
        s["groups"].add(r[group_column])
    overlaps = sorted(str(g) for g, ss in groups.items() if len(ss) > 1)
    cross_dups = []
    if dup:
        for r in rows:
            of = r.get("dedup_of")
            if of and of in split_of and split_of[of] != r[split_column]:
                cross_dups.append(
                    {
                        "id": r["id"],
                        "split": r[split_column],
                        "duplicate_of": of,
                        "its_split": split_of[of],
                    }
                )
    out = {
        "table": table,
        "split_column": split_column,
        "group_column": group_column,
        "splits": {
            k: {"rows": v["rows"], "groups": len(v["groups"])} for k, v in sorted(per_split.items())
        },
        "groups_in_two_splits": len(overlaps),
        "overlapping_groups": overlaps[:50],
        "near_duplicate_pairs_across_splits": len(cross_dups),
        "near_duplicate_examples": cross_dups[:20],
    }
    if label:
        classes: dict[str, set] = {}
        for r in rows:
            classes.setdefault(str(r[split_column]), set()).add(r[label])
        train = classes.get("train", set())
        out["label"] = {
            "column": label,
            "classes_per_split": {k: len(v) for k, v in sorted(classes.items())},
            "unseen_in_train": {
                k: sorted(map(str, v - train))[:50]
                for k, v in sorted(classes.items())
                if k != "train"
            },
        }
    return out
