"""The installed ``bnaudit`` command from Python: run it with ``--format json`` and return the
report. Pure Python, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from typing import Any, Iterable, List, Optional, Sequence

__all__ = ["BnauditError", "Report", "binary", "check", "diff", "explain", "ls"]


class BnauditError(RuntimeError):
    """The command failed: ``code`` is its exit code (2 usage, 3 input error), ``stderr`` what
    it printed, ``command`` the argument list it ran with."""

    def __init__(self, command: Sequence[str], code: int, stderr: str) -> None:
        self.command = list(command)
        self.code = code
        self.stderr = stderr
        detail = stderr.strip() or "(nothing on stderr)"
        super().__init__(f"bnaudit {' '.join(self.command[1:2])} exited with {code}: {detail}")


class Report(dict):
    """A JSON object of the report: a ``dict`` whose keys also read as attributes
    (``report.passed``, ``report.summary.changed``); nested objects are Reports too."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @staticmethod
    def wrap(value: Any) -> Any:
        if isinstance(value, dict):
            return Report((k, Report.wrap(v)) for k, v in value.items())
        if isinstance(value, list):
            return [Report.wrap(v) for v in value]
        return value


def binary() -> str:
    """The ``bnaudit`` executable: ``$BNAUDIT_BINARY`` when set, else the one installed with this
    package (the environment's scripts directory), else the first on ``PATH``."""
    explicit = os.environ.get("BNAUDIT_BINARY")
    if explicit:
        return explicit
    exe = "bnaudit" + (sysconfig.get_config_var("EXE") or "")
    schemes = [sysconfig.get_path("scripts")]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        schemes.append(sysconfig.get_path("scripts", user_scheme))
    for scripts in schemes:
        candidate = os.path.join(scripts, exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("bnaudit")
    if found is None:
        raise FileNotFoundError(
            f"no bnaudit executable in {schemes[0]} or on PATH: `pip install bnaudit` (or set BNAUDIT_BINARY)"
        )
    return found


# Options the wrappers own: the report comes back as JSON on stdout.
_RESERVED = {"format", "output", "color"}


def _flags(options: dict) -> List[str]:
    """Keyword arguments as flags: ``allow_stats=["a", "b"]`` is ``--allow-stats a --allow-stats
    b`` (one value per flag, so that values are never taken for positionals), ``True`` a bare
    flag, ``None``/``False`` nothing."""
    out: List[str] = []
    for key, value in options.items():
        if key in _RESERVED:
            raise TypeError(f"{key}= is not an option here: the wrappers read the JSON report from stdout")
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                out += [flag, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
        else:
            out += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return out


def _run(command: str, positionals: Iterable[Any], options: dict, ok: Sequence[int] = (0,)) -> Report:
    # Positionals first: a repeatable option must not swallow them.
    args = [binary(), command, *(os.fspath(p) for p in positionals), *_flags(options), "--format", "json"]
    done = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    if done.returncode not in ok:
        raise BnauditError(args, done.returncode, done.stderr)
    try:
        return Report.wrap(json.loads(done.stdout))
    except json.JSONDecodeError as e:
        raise BnauditError(args, done.returncode, f"output is not JSON ({e}): {done.stdout[:200]!r}") from e


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("NO_COLOR", "1")
    return env


def _patterns(value: Optional[Any]) -> Optional[List[str]]:
    """A pattern list; one string is one pattern (not a list of characters)."""
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def check(a, b, frozen=None, trainable=None, allow_stats=None, **options) -> Report:
    """``bnaudit check A B``: the report (``.passed``, ``.violations``, ``.diff``); violations
    are not an error. Patterns mean what they mean in ``--frozen``; without ``frozen`` the scope
    comes from ``bnaudit.toml`` or ``pyproject.toml`` in the working directory (or
    ``config=FILE``). Other keywords are the command's options (``atol=1e-6``,
    ``strip_prefix_a="module."``)."""
    scope = {"frozen": _patterns(frozen), "trainable": _patterns(trainable), "allow_stats": _patterns(allow_stats)}
    return _run("check", [a, b], {**scope, **options}, ok=(0, 1))


def diff(a, b, **options) -> Report:
    """``bnaudit diff A B``: the report (``.summary``, ``.layers``, ``.groups``, ...)."""
    return _run("diff", [a, b], options, ok=(0, 1) if options.get("exit_code") else (0,))


def ls(checkpoint, **options) -> Report:
    """``bnaudit ls CHECKPOINT``: the checkpoint's BatchNorm layers (``.layers``)."""
    return _run("ls", [checkpoint], options)


def explain(a, b, activations=None, **options) -> Report:
    """``bnaudit explain A B [--activations FILE]``: the per-layer explanation (``.layers``, each
    with ``.replay.explains_b``). ``layer=[...]`` picks layers."""
    return _run("explain", [a, b], {"activations": activations, **options})


