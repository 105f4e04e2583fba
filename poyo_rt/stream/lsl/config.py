"""liblsl's configuration, applied once per process before any other LSL call, and the LSL clock.

By default the packaged ``poyo_rt/stream/loopback.cfg`` (machine-scope discovery, loopback peer only, no
IPv6), so no discovery packet leaves the machine; site-wide discovery is an explicit choice
(``configure_lsl("site")``). liblsl reads its configuration lazily, at the first real LSL call, which is
why every function of :mod:`poyo_rt.stream.lsl` calls :func:`ensure_configured` first.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pylsl

log = logging.getLogger(__name__)


def require_positive(field: str, value: float, integer: bool = False) -> None:
    """ValueError naming ``field`` unless ``value`` is a positive finite number (int if asked)."""
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value) or value <= 0:
        kind = "a positive int" if integer else "a positive finite number"
        raise ValueError(f"{field} must be {kind}, got {value!r}")


_SCOPES = ("machine", "site")
_MACHINE_SCOPE_RE = re.compile(r"^\s*ResolveScope\s*=\s*machine\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class _ConfigState:
    request: tuple[str, str | None] | None = None  # (scope, config_path) once applied
    description: str = ""


_config_state = _ConfigState()
_config_lock = threading.Lock()


def packaged_config_path() -> Path:
    """Path of the packaged machine-scope liblsl config (``poyo_rt/stream/loopback.cfg``)."""
    return Path(__file__).resolve().parents[1] / "loopback.cfg"


def _declares_machine_scope(path: Path) -> bool:
    try:
        return bool(_MACHINE_SCOPE_RE.search(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def configure_lsl(scope: str = "machine", config_path: str | os.PathLike[str] | None = None) -> None:
    """Apply liblsl's configuration, once per process, before any other LSL call.

    Args:
        scope: ``"machine"`` (default): keep LSL discovery on this machine. Uses, in order:
            ``config_path`` if given; else the file named by an ``LSLAPICFG`` environment variable the
            user already set (honoured and logged; a warning if it does not set machine scope); else
            the packaged ``loopback.cfg``, applied with ``pylsl.set_config_content`` and exported as
            ``LSLAPICFG`` so that child processes inherit it.
            ``"site"``: the lab explicitly wants liblsl's normal network discovery: applies
            ``config_path`` if given, else nothing (liblsl then reads ``LSLAPICFG`` / ``lsl_api.cfg``
            itself, or uses its defaults).
        config_path: a liblsl config file (INI) to apply instead.

    liblsl reads its configuration once, at its first use. A second call with the same arguments is a
    no-op; with different ones it logs a warning and changes nothing. liblsl cannot be asked which
    configuration it loaded, so LSL calls made through pylsl directly before this function cannot be
    detected: in poyo-rt, only this module calls pylsl, and it configures first.
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    path: Path | None = None
    if config_path is not None:
        path = Path(config_path).expanduser().resolve()
        if not path.is_file():
            raise ValueError(f"config_path: no readable file at {str(config_path)!r}")
    request = (scope, None if path is None else str(path))
    with _config_lock:
        if _config_state.request is not None:
            if _config_state.request != request:
                log.warning(
                    "LSL is already configured (%s); liblsl reads its configuration once per "
                    "process, so configure_lsl(scope=%r, config_path=%r) changes nothing",
                    _config_state.description,
                    scope,
                    config_path,
                )
            return
        _config_state.description = _apply_config(scope, path)
        _config_state.request = request
    log.info("LSL configuration: %s", _config_state.description)


def _apply_config(scope: str, path: Path | None) -> str:
    """Apply one configuration choice; return a description of what was applied."""
    if path is not None:
        pylsl.set_config_filename(str(path))
        if scope == "machine" and not _declares_machine_scope(path):
            log.warning(
                "LSL config %s does not set 'ResolveScope = machine': discovery may leave this machine",
                path,
            )
        return f"scope={scope}, file {path}"
    if scope == "site":
        return "scope=site, liblsl's own configuration lookup (LSLAPICFG, lsl_api.cfg) or defaults"
    env = os.environ.get("LSLAPICFG")
    if env:
        env_path = Path(env).expanduser()
        if env_path.is_file():
            if not _declares_machine_scope(env_path):
                log.warning(
                    "honouring LSLAPICFG=%s, which does not set 'ResolveScope = machine': "
                    "LSL discovery may leave this machine",
                    env,
                )
            return f"scope=machine requested, honouring LSLAPICFG={env}"
        log.warning(
            "LSLAPICFG=%s is not a readable file (liblsl would fall back to its network-wide "
            "defaults); applying the packaged machine-scope config instead",
            env,
        )
    cfg = packaged_config_path()
    pylsl.set_config_content(cfg.read_text(encoding="utf-8"))
    os.environ["LSLAPICFG"] = str(cfg)  # child processes (replay, tools) inherit machine scope
    return f"scope=machine, packaged {cfg}"


def lsl_config_description() -> str | None:
    """What :func:`configure_lsl` applied in this process, or None if it has not run yet."""
    return _config_state.description if _config_state.request is not None else None


def ensure_configured() -> None:
    if _config_state.request is None:
        configure_lsl()


def local_clock() -> float:
    """This machine's LSL clock, in seconds (the time base of every spike time returned here)."""
    if _config_state.request is None:  # the config goes in before any liblsl call, the clock's included
        configure_lsl()
    return pylsl.local_clock()
