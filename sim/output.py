"""Writing results: every file appears whole or not at all (temporary file, then rename)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from sim.scenario import Scenario


def atomic_write(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def safe_folder_name(name: str, max_bytes: int = 100) -> str:
    """``name`` as one folder-name component that cannot leave its parent: word characters, ``.``
    and ``-`` only, no leading dot, at most ``max_bytes`` bytes of UTF-8; ``"scenario"`` if empty.

    >>> safe_folder_name("../../etc/passwd")
    'etc-passwd'
    """
    cleaned = re.sub(r"[^\w.-]+", "-", name).strip(".-")
    cleaned = cleaned.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore").rstrip(".-")
    return cleaned or "scenario"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars unwrapped, NaN and infinity as null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, dumps(obj) + "\n")


def scenario_toml(sc: Scenario) -> str:
    return tomli_w.dumps(sc.file_dict())


def columns_csv(columns: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = list(columns)
    writer.writerow(keys)
    arrays = [np.asarray(columns[k]).tolist() for k in keys]
    writer.writerows(zip(*arrays, strict=True))
    return buf.getvalue()


def write_csv(path: Path, columns: dict[str, np.ndarray]) -> None:
    atomic_write(path, columns_csv(columns))


def _cell(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def csv_line(values: list) -> str:
    """One CSV line: floats to the last digit (``repr``), None as an empty cell."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([_cell(v) for v in values])
    return buf.getvalue()


def append_row(f, values: list) -> None:
    """Append one row to an open CSV file and make it durable: a finished row survives a crash
    of the machine, not just of startsim."""
    f.write(csv_line(values))
    f.flush()
    os.fsync(f.fileno())
