"""YAML text a checkpoint keeps (audiocraft's ``xp.cfg``): read safely and bounded, with the
interpolations of its own keys resolved as OmegaConf resolves them and no resolver run. Torch-free:
the families read it, and so does the preview cache, to count a run's settings by their shape."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from wmap.errors import BadConfig

MAX_TEXT = 1 << 20
"""The longest text read (an ``xp.cfg`` is a few kB)."""

MAX_INTERPOLATIONS = 256
"""The most ``${...}`` a text may hold (audiocraft's configs hold a few dozen): each is resolved
through the ones it names, so their number bounds the time resolving takes."""

RESOLVER_CALL = re.compile(r"\$\{\s*[\w.-]+\s*:")
"""A resolver's call (``${oc.env:HOME}``) rather than a reference to a key (``${sample_rate}``)."""


def read_yaml(text: object, key: str, source: str = "checkpoint") -> Any:
    """``text`` (the value of ``key`` in ``source``) as the structure its YAML says, its interpolations
    resolved (:func:`resolved`); a :class:`BadConfig` naming ``key`` where it is not such text."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return BadConfig(source, key, "audiocraft's experiment config (YAML text)", type(text).__name__)
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return BadConfig(source, key, "YAML text", str(error).splitlines()[0][:80])
    except RecursionError:
        return BadConfig(source, key, f"YAML text nested at most {MAX_DEPTH} deep", "nested too deep to read")
    wrong = _not_plain(loaded)
    if wrong is not None:
        return BadConfig(source, key, f"plain YAML (no aliases, at most {MAX_DEPTH} deep, {MAX_NODES} values)", wrong)
    return resolved(loaded, text, key, source)


MAX_DEPTH = 64
MAX_NODES = 100_000
"""Bounds on what a text's structure may hold: an ``xp.cfg`` is a few levels and a few hundred values."""


def _not_plain(loaded: object) -> str | None:
    """What makes ``loaded`` more than a tree of plain values, or ``None``: a container met twice (a YAML
    alias, which would be walked once per reference: ``&a [*a]`` loops, aliases of aliases grow
    exponentially), more than :data:`MAX_DEPTH` levels or :data:`MAX_NODES` values."""
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(loaded, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            return f"more than {MAX_NODES} values"
        if isinstance(value, dict | list):
            if id(value) in seen:
                return "an alias (*name) of a mapping or list"
            if depth >= MAX_DEPTH:
                return f"more than {MAX_DEPTH} levels"
            seen.add(id(value))
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return None


def resolved(loaded: Any, text: str, key: str, source: str = "checkpoint") -> Any:
    """``loaded`` with its interpolations (``${sample_rate}``, ``${encodec.causal}``) resolved, as
    audiocraft's loaders resolve them (``OmegaConf.create`` of the text): its export writes the solver's
    config unresolved. A resolver's call is refused, not run (``${oc.env:...}`` would put the
    environment into the converted config), as are more than :data:`MAX_INTERPOLATIONS`."""
    count = text.count("${")
    if not count or not isinstance(loaded, dict):
        return loaded
    expected = f"values and at most {MAX_INTERPOLATIONS} interpolations of its own keys (no resolver is run)"
    call = RESOLVER_CALL.search(text)
    if call is not None or count > MAX_INTERPOLATIONS:
        return BadConfig(source, key, expected, f"{call.group(0)}...}}" if call else f"{count} interpolations")
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(OmegaConf.create(loaded), resolve=True)
    except (OmegaConfBaseException, RecursionError) as error:
        return BadConfig(source, key, expected, str(error).splitlines()[0][:120])


def dump_yaml(value: object) -> str:
    """``value`` as YAML text in its own key order, each repeated object written out again (no anchors
    or aliases: :func:`read_yaml` refuses them, and audiocraft's own export writes none)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:
            return True

    return str(yaml.dump(value, Dumper=Dumper, sort_keys=False))


def read_mapping(value: object, key: str, source: str = "checkpoint") -> Any:
    """A config kept as a mapping (an omegaconf config pickled as it is, read as plain containers with its
    interpolations as written), read as the same config written as text would be (:func:`read_yaml`)."""
    import yaml

    try:
        text = dump_yaml(value)
    except (yaml.YAMLError, RecursionError) as error:
        return BadConfig(source, key, "a config of plain values", f"{type(error).__name__}: {error}"[:120])
    return read_yaml(text, key, source)


def read_config(value: object, key: str, source: str = "checkpoint") -> Any:
    """A config a checkpoint keeps at ``key`` as YAML text (:func:`read_yaml`) or as a mapping
    (:func:`read_mapping`), read the same way either way."""
    return read_mapping(dict(value), key, source) if isinstance(value, Mapping) else read_yaml(value, key, source)
