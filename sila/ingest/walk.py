"""What an ingest reads: inputs (files, folders, globs, manifests, object-store prefixes)
become `Entry`s, and everything not read is counted with its reason.

Confinement: a walked folder's symlinks may not lead out of it, and a manifest's paths, relative
or absolute, must lead (after resolving `..` and links) into the manifest's folder or a folder
named on the command line; anything else is a reported "outside" line whose file is never opened
(a manifest is data, often from someone else: it must not read `/etc/passwd` into a lake).
`allow_outside` lifts both rules. Hidden files and folders are skipped and counted.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sila.ingest.manifest import MANIFEST_SUFFIXES, ManifestLine, read_manifest
from sila.media import display_path

log = logging.getLogger(__name__)


@dataclass
class Entry:
    """One file to ingest. `path` is what is read (local path, or object URI when `remote`);
    `shown` is the user's own name for it, always valid UTF-8."""

    path: str
    shown: str
    raw: bytes | None = None  # the path's bytes when they are not valid UTF-8
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None  # "<manifest>:<line>" for a manifest entry
    remote: bool = False


@dataclass
class Skipped:
    path: str
    reason: str  # "hidden" | "outside" | "lake" (the lake's own folder: not counted)
    detail: str = ""


@dataclass
class WalkReport:
    """What the walk refused or could not find; the writer counts the rest."""

    missing: list[str] = field(default_factory=list)
    skipped_hidden: int = 0
    skipped_outside: int = 0
    skipped: list[Skipped] = field(default_factory=list)  # the first few, for the report
    bad_lines: list[dict] = field(default_factory=list)  # {path, manifest, line, error}
    meta_warnings: list[dict] = field(default_factory=list)
    keep: int = 200  # how many skipped entries to list by name

    def skip(self, path: str, reason: str, detail: str = "", count: int = 1) -> None:
        if reason == "hidden":
            self.skipped_hidden += count
        elif reason == "outside":
            self.skipped_outside += count
        if len(self.skipped) < self.keep:
            self.skipped.append(Skipped(display_path(path), reason, detail))


def entry_for(path: str, **kw: Any) -> Entry:
    raw = os.fsencode(path)
    shown = display_path(raw)
    return Entry(path, shown, raw if shown.encode() != raw else None, **kw)


def inside(path: str, root: str) -> bool:
    """`path` (a realpath) lies in `root` (a realpath)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Walker:
    """Turns inputs into entries lazily (a folder of a million files starts flowing at once);
    manifests are read up front so meta types can be inferred before any row is written."""

    def __init__(
        self,
        inputs: list[str],
        *,
        allow_outside: bool = False,
        storage_options: dict[str, str] | None = None,
        lake_dir: str | None = None,
    ) -> None:
        from sila.coordinator.store import is_remote

        self.inputs = inputs
        self.allow_outside = allow_outside
        self.storage_options = storage_options or {}
        # a folder that holds the lake must not ingest the lake's own files
        self.lake_real = os.path.realpath(lake_dir) if lake_dir else None
        self._stores: dict[str, Any] = {}
        self.report = WalkReport()
        self._seen: dict[str, dict] = {}  # absolute path -> meta of its first mention
        self.manifests: dict[str, list[ManifestLine]] = {}
        # folders named on the command line: a manifest's paths may lead into these too
        self.named_dirs = [
            os.path.realpath(i) for i in inputs if not is_remote(i) and os.path.isdir(i)
        ]
        for item in inputs:
            if not is_remote(item) and item.endswith(MANIFEST_SUFFIXES) and os.path.isfile(item):
                self.manifests[item] = self._read(item)

    def _read(self, manifest: str) -> list[ManifestLine]:
        good, bad = read_manifest(manifest)
        for b in bad:
            where = f"{display_path(manifest)}:{b.line}" if b.line else display_path(manifest)
            self.report.bad_lines.append(
                {"path": where, "manifest": display_path(manifest), "line": b.line,
                 "error": b.error}
            )  # fmt: skip
        return good

    def metas(self) -> Iterator[dict[str, Any]]:
        for lines in self.manifests.values():
            for ln in lines:
                yield ln.meta

    def __iter__(self) -> Iterator[Entry]:
        from sila.coordinator.store import is_remote

        # manifest entries first: where a file is also named plainly, the manifest's fields win
        for item in self.manifests:
            yield from self._manifest(item)
        for item in self.inputs:
            if is_remote(item):
                yield from self._remote(item)
            elif item in self.manifests:
                continue
            elif os.path.isdir(item):
                yield from self._folder(item)
            elif os.path.exists(item) or os.path.islink(item):
                yield from self._once(entry_for(os.path.abspath(item)))
            elif any(ch in item for ch in "*?["):
                matched = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
                if not matched:
                    self.report.missing.append(display_path(item))
                for p in matched:
                    yield from self._once(entry_for(os.path.abspath(p)))
            else:
                self.report.missing.append(display_path(item))

    def _once(self, e: Entry) -> Iterator[Entry]:
        """The same path named twice is one file; differing manifest values are reported."""
        key = e.path if e.remote else os.path.abspath(e.path)
        if key in self._seen:
            if e.meta and e.meta != self._seen[key]:
                self.report.meta_warnings.append(
                    {"path": e.shown, "origin": e.origin,
                     "error": f"{e.shown} is named again ({e.origin}) with other values; "
                              "the first mention's values are kept"}
                )  # fmt: skip
            return
        self._seen[key] = e.meta
        yield e

    def _manifest(self, manifest: str) -> Iterator[Entry]:
        from sila.coordinator.store import is_remote

        base = os.path.dirname(os.path.abspath(manifest))
        base_real = os.path.realpath(base)
        shown_manifest = display_path(manifest)
        for ln in self.manifests[manifest]:
            origin = f"{shown_manifest}:{ln.line}"
            if is_remote(ln.path):
                yield from self._once(Entry(ln.path, ln.path, meta=ln.meta, origin=origin,
                                            remote=True))  # fmt: skip
                continue
            path = os.path.normpath(os.path.join(base, ln.path))  # an absolute path stays
            if not self.allow_outside:
                # realpath resolves `..` and links from names alone: the file is never opened
                real = os.path.realpath(path)
                if not any(inside(real, root) for root in (base_real, *self.named_dirs)):
                    self.report.skip(
                        path, "outside", f"named in {origin}, leads out of the manifest's "
                        f"folder and the folders named to {display_path(real)} "
                        "(use --allow-outside to accept)"
                    )  # fmt: skip
                    continue
            if not os.path.lexists(path):  # missing, not a failed row: there is no file
                self.report.missing.append(f"{display_path(path)} (named in {origin})")
                continue
            yield from self._once(entry_for(path, meta=ln.meta, origin=origin))

    def _folder(self, top: str) -> Iterator[Entry]:
        """Depth first, names sorted. Symlinked folders inside the root are followed (their
        files are then also seen under the link's name, which `source_paths` keeps); a link
        back to a folder on the current path is a loop and is not entered."""
        root = os.path.abspath(top)
        root_real = os.path.realpath(root)
        stack: list[tuple[str, tuple[str, ...]]] = [(root, (root_real,))]
        while stack:
            here, chain = stack.pop()
            try:
                with os.scandir(here) as it:
                    items = sorted(it, key=lambda x: x.name)
            except OSError as err:
                shown = display_path(here)
                self.report.bad_lines.append(
                    {"path": shown, "manifest": None, "line": None,
                     "error": f"cannot list folder: {err.strerror or err}"}
                )  # fmt: skip
                continue
            subdirs = []
            for item in items:
                full = item.path
                if item.name.startswith("."):
                    if item.is_dir(follow_symlinks=False):
                        n = sum(len(f) for _, _, f in os.walk(full))  # listing only: no reads
                        self.report.skip(full, "hidden", f"hidden folder ({n} files)", count=n)
                    else:
                        self.report.skip(full, "hidden", "hidden file")
                    continue
                if item.is_symlink() and not self._confined(full, root_real):
                    self.report.skip(full, "outside", self._why_outside(full))
                    continue
                try:
                    is_dir = item.is_dir()
                except OSError:
                    is_dir = False
                if not is_dir:
                    yield from self._once(entry_for(full))
                    continue
                real = os.path.realpath(full)
                if real == self.lake_real:
                    self.report.skip(full, "lake", "the lake itself", count=0)
                    continue
                if real in chain:
                    log.debug("not entering %s: a link back to %s", full, real)
                    continue
                subdirs.append((full, (*chain, real)))
            stack.extend(reversed(subdirs))

    def _confined(self, link: str, root_real: str) -> bool:
        return self.allow_outside or inside(os.path.realpath(link), root_real)

    @staticmethod
    def _why_outside(link: str) -> str:
        target = display_path(os.path.realpath(link))
        return f"symlink leads out of the folder to {target} (use --allow-outside to follow)"

    def _remote(self, uri: str) -> Iterator[Entry]:
        """Objects under a prefix, listed page by page (never the whole corpus at once)."""
        import obstore

        scheme, _, rest = uri.partition("://")
        bucket, _, key = rest.partition("/")
        store = self.store_for_url(f"{scheme}://{bucket}")
        found = False
        prefix = key.rstrip("/") + "/" if key else ""
        for chunk in obstore.list(store, prefix=key or None):
            for m in sorted(chunk, key=lambda m: m["path"]):
                k = m["path"]
                if k != key and key and not k.startswith(prefix):
                    continue  # "raw/a" must not match "raw/ab"
                found = True
                full = f"{scheme}://{bucket}/{k}"
                rel = k[len(prefix) :] if k != key else os.path.basename(k)
                if any(part.startswith(".") for part in rel.split("/")):
                    self.report.skip(full, "hidden", "hidden object")
                    continue
                yield from self._once(Entry(full, full, remote=True))
        if not found:
            self.report.missing.append(uri)

    def store_for_url(self, url: str) -> Any:
        """One obstore store per bucket, configured with the lake's storage options."""
        from sila.coordinator.store import open_store

        if url not in self._stores:
            self._stores[url] = open_store(url, self.storage_options)
        return self._stores[url]
