"""Reading the JSON files of checkpoints and exports (standard library only: the torch-free
runtime and the checkpoint code both use it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(
    path: Path, holder: str, error: type[Exception], missing: type[Exception] = FileNotFoundError
) -> Any:
    """The JSON document at `path`, a file that `holder` always has: `missing` when it is not
    there, `error` naming the file when it is not valid JSON (checkpoints and exports)."""
    if not path.is_file():
        raise missing(f"{path}: missing; {holder} holds {path.name}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from e
