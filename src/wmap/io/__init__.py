"""Reading checkpoints safely and writing outputs atomically, a module per job.

- :mod:`wmap.io.paths`: names checked before any system call, regular files before any read, small
  text files read whole and bounded;
- :mod:`wmap.io.reading`: checkpoints (safetensors memory-mapped; torch pickles ``weights_only`` with
  the config classes real checkpoints carry and inert stand-ins, no code run);
- :mod:`wmap.io.mapped`: where a memory-mapped checkpoint lies, and kernel copies of its bytes;
- :mod:`wmap.io.directory`: a ``save_pretrained`` directory's weights (one file, shards, ``.bin``);
- :mod:`wmap.io.writing`: safetensors streamed, what ``save_pretrained`` writes, torch files;
- :mod:`wmap.io.atomic`: outputs staged beside their targets and moved in whole.

The layers go one way: ``paths`` and ``mapped`` import nothing of wmap's I/O; ``reading`` and
``writing`` import them; ``directory`` imports ``reading``; ``atomic`` imports ``paths``.
"""

from __future__ import annotations

from wmap.io.atomic import (
    MODEL_DIRECTORY_FILES,
    _umask,  # noqa: F401 - the tests read the process's umask through it
    check_output,
    holds_none_of,
    inputs_of,
    looks_like_checkpoint,
    write_directory_atomically,
    write_file_atomically,
    write_files_atomically,
)
from wmap.io.directory import (
    INDEX,
    WEIGHTS_FILES,
    in_model_directory,
    mapped_sources,
    read_directory_source,
    read_weights,
    staged_copy,
    weights_file,
)
from wmap.io.mapped import MappedFile, mapped_file
from wmap.io.paths import (
    NAME_MAX,
    PATH_MAX,
    SMALL_FILE_LIMIT,
    parse_json,
    path_problem,
    read_small_text,
    regular_file_problem,
)
from wmap.io.reading import (
    CONTAINER_KEYS,
    EXPECTED,
    MAX_NESTING,
    NO_STAND_INS,
    Checkpoint,
    Source,
    allowed_globals,
    flatten_tensors,
    read_checkpoint,
    read_layout,
    read_pickled,
    read_source,
    refused_globals,
    unresolved,
    unwrap,
)
from wmap.io.writing import (
    DEFAULT_MAX_SHARD_SIZE,
    SAFETENSORS_DTYPES,
    PickledAs,
    save_pretrained_streaming,
    save_processor,
    save_torch,
    shard_split,
    write_safetensors,
    write_weights,
)

__all__ = [
    "CONTAINER_KEYS",
    "Checkpoint",
    "DEFAULT_MAX_SHARD_SIZE",
    "EXPECTED",
    "INDEX",
    "MAX_NESTING",
    "MODEL_DIRECTORY_FILES",
    "MappedFile",
    "NAME_MAX",
    "PATH_MAX",
    "PickledAs",
    "SAFETENSORS_DTYPES",
    "SMALL_FILE_LIMIT",
    "NO_STAND_INS",
    "Source",
    "WEIGHTS_FILES",
    "allowed_globals",
    "check_output",
    "flatten_tensors",
    "holds_none_of",
    "inputs_of",
    "looks_like_checkpoint",
    "mapped_file",
    "parse_json",
    "path_problem",
    "read_checkpoint",
    "read_directory_source",
    "read_layout",
    "read_pickled",
    "read_small_text",
    "read_source",
    "read_weights",
    "mapped_sources",
    "refused_globals",
    "regular_file_problem",
    "save_pretrained_streaming",
    "save_processor",
    "shard_split",
    "save_torch",
    "staged_copy",
    "unresolved",
    "unwrap",
    "weights_file",
    "in_model_directory",
    "write_directory_atomically",
    "write_file_atomically",
    "write_files_atomically",
    "write_safetensors",
    "write_weights",
]
