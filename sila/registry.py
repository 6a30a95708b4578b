"""Find stages: the `sila.stages` entry-point group (built-ins register there like any package),
a file (`path/to/my_stages.py:Sharpness`) or a module (`my_pkg.stages:Sharpness`)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points

from sila.errors import ContractError, StageNotFound
from sila.stage import Stage

GROUP = "sila.stages"


@dataclass(frozen=True)
class StageInfo:
    name: str
    origin: str  # "entry point <dist>", "file <path>", "module <mod>"
    spec: str  # what re-resolves it in another process
    cls: type[Stage] | None
    error: str | None = None


def registered() -> dict[str, StageInfo]:
    out: dict[str, StageInfo] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(ep.dist, "name", "?") if ep.dist else "?"
        try:
            cls = ep.load()
            _check_class(cls, f"entry point '{ep.name}' ({ep.value})")
            out[ep.name] = StageInfo(ep.name, f"entry point ({dist})", ep.name, cls)
        except Exception as e:  # noqa: BLE001 - one broken plugin must not hide the others
            out[ep.name] = StageInfo(
                ep.name, f"entry point ({dist})", ep.name, None, f"{type(e).__name__}: {e}"
            )
    return out


def _check_class(obj, where: str) -> type[Stage]:
    if not (inspect.isclass(obj) and issubclass(obj, Stage)):
        raise ContractError(f"{where} is {obj!r}, not a sila.Stage subclass")
    obj.validate_declaration()
    return obj


def load_file(path: str) -> object:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise StageNotFound(f"stage file {path} does not exist")
    modname = "sila_user_" + hashlib.sha1(path.encode()).hexdigest()[:10]
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[modname]
        raise
    return module


def resolve(spec) -> type[Stage]:
    """A Stage class from a class, an instance, a registered name, 'file.py:Class' or 'mod:Class'."""
    if inspect.isclass(spec):
        cls = _check_class(spec, f"class {spec!r}")
        if "__sila_spec__" not in cls.__dict__ and "." not in cls.__qualname__:
            try:  # remember where it lives so `sila status` can tell when its code changes
                path = inspect.getfile(cls)
                if cls.__module__ != "__main__" and os.path.isfile(path):
                    cls.__sila_spec__ = f"{os.path.abspath(path)}:{cls.__qualname__}"
            except TypeError:
                pass
        return cls
    if isinstance(spec, Stage):
        return _check_class(type(spec), f"instance of {type(spec)!r}")
    if not isinstance(spec, str):
        raise StageNotFound(f"cannot make a stage from {spec!r}")
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        if target.endswith(".py") or os.sep in target:
            module = load_file(target)
            where = f"file {target}"
        else:
            try:
                module = importlib.import_module(target)
            except ImportError as e:
                raise StageNotFound(f"cannot import module '{target}': {e}") from e
            where = f"module {target}"
        obj = getattr(module, attr, None)
        if obj is None:
            names = [
                n
                for n, v in vars(module).items()
                if inspect.isclass(v) and issubclass(v, Stage) and v is not Stage
            ]
            raise StageNotFound(
                f"{where} has no '{attr}' (stages there: {', '.join(names) or 'none'})"
            )
        cls = _check_class(obj, f"{where}:{attr}")
        if where.startswith("file"):
            spec = f"{os.path.abspath(target)}:{attr}"
        cls.__sila_spec__ = (
            spec  # recorded in column metadata so `sila status` can re-check the code
        )
        return cls
    reg = registered()
    if spec in reg:
        info = reg[spec]
        if info.cls is None:
            raise StageNotFound(f"stage '{spec}' failed to load: {info.error}")
        info.cls.__sila_spec__ = spec
        return info.cls
    raise StageNotFound(
        f"no stage named '{spec}' (registered: {', '.join(sorted(reg)) or 'none'}); run a stage "
        "of your own with `sila run path/to/file.py:ClassName` or `sila run package.module:ClassName`"
    )


def portable_spec(spec, cls: type[Stage]) -> object:
    """Something a spawned process can resolve to the same class."""
    if isinstance(spec, str):
        return spec
    import ray.cloudpickle as cloudpickle

    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None) or ""
    if (
        module is not None
        and cls.__module__ != "__main__"
        and "site-packages" not in path
        and not cls.__module__.startswith("sila.")
    ):
        # a user's own module (a notebook's helper file, a test): ship its code, since workers
        # elsewhere cannot import it by name
        cloudpickle.register_pickle_by_value(module)
    return cloudpickle.dumps(cls)


def from_portable(p) -> type[Stage]:
    if isinstance(p, bytes):
        import ray.cloudpickle as cloudpickle

        return cloudpickle.loads(p)
    return resolve(p)
