"""tidybot_skills: the robot's saved skills, imported by name in submitted code.

    from tidybot_skills import pick_cube        # the latest version as of this goal's start
    pick_cube(0.5, 0.0)

    import tidybot_skills
    place = tidybot_skills.load("place", 2)     # a pinned version

A skill is a module in the node's skill store (skills/save, docs/skills.md) that defines a
function named like the skill. The node hands the module's code to this process when it is
first imported — through the same channel as rewinds and camera frames, so the store
itself is out of the code's reach (read-only, and not even a file in the sandbox) — and
writes ``NAME@VERSION`` of every skill imported into the execution's record. The module
runs as ``tidybot_skills.NAME`` (its ``__main__`` block does not run), once per version;
it may import other skills. A replay (goal ``replay_of``) gets the versions its original
imported. A name the store does not have raises SkillNotFound, an ImportError naming the
skills that exist.
"""
# Every name of this module but __all__ starts with "_": any other would shadow the skill of
# that name (module __getattr__ is asked only for names the module does not have).
import linecache as _linecache
import threading as _threading
import types as _types
from typing import Any as _Any, Callable as _Callable

from tidybot_sdk import robot as _robot
from tidybot_sdk.errors import TidybotError as _TidybotError
from tidybot_sdk.protocol import NodeMsg as _NodeMsg

__all__ = ["load", "module", "SkillNotFound"]

_TIMEOUT_S = 10.0
_modules: dict[tuple[str, int], _types.ModuleType] = {}   # (name, version) -> its module
_latest: dict[str, int] = {}                             # the version "latest" stood for
_lock = _threading.RLock()                               # a skill may import others


class SkillNotFound(_TidybotError, ImportError):
    """No such skill or version in the store, or it could not be had from the node."""


def load(name: str, version: int = 0) -> _Callable[..., _Any]:
    """The function of skill ``name`` at ``version`` (0: the latest as of the goal's start,
    or the version a replay's original used)."""
    found = module(name, version)
    try:
        return getattr(found, name)
    except AttributeError:          # the module is still being run: a circular import
        raise SkillNotFound(f"skill {name} is imported while it is still being loaded (a "
                            f"circular import between skills)") from None


def module(name: str, version: int = 0) -> _types.ModuleType:
    """The whole module of skill ``name`` (its helpers too); see load."""
    if not isinstance(name, str) or type(version) is not int or version < 0:
        raise SkillNotFound(f"a skill is loaded by name and version >= 0, got {name!r}, {version!r}")
    with _lock:
        version = version or _latest.get(name, 0)
        found = _modules.get((name, version))
        if found is None:
            found = _fetch(name, version)
        return found


def _fetch(name: str, asked: int) -> _types.ModuleType:
    reply = _robot.node_channel.request({"msg_type": int(_NodeMsg.SKILL), "name": name,
                                         "version": asked}, _TIMEOUT_S, SkillNotFound,
                                        f"skill {name}")
    if reply.get("error"):
        raise SkillNotFound(reply["error"])
    version, code = int(reply["version"]), str(reply["code"])
    if not asked:
        _latest[name] = version
    if (name, version) in _modules:                 # "latest" was loaded pinned before
        return _modules[(name, version)]
    filename = f"<skill {name}@{version}>"
    _linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    found = _types.ModuleType(f"tidybot_skills.{name}")
    found.__file__, found.__version__ = filename, version
    _modules[(name, version)] = found               # before it runs: see load's circular case
    try:
        exec(compile(code, filename, "exec", dont_inherit=True), found.__dict__)
    except BaseException:
        del _modules[(name, version)]
        raise
    return found


def __getattr__(name: str) -> _Callable[..., _Any]:
    """``from tidybot_skills import NAME`` and ``tidybot_skills.NAME``."""
    if name.startswith("__"):       # the import system's probes (__path__, __spec__, ...)
        raise AttributeError(name)
    return load(name)
