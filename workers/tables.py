"""Reading data files (CSV and Parquet, with pyarrow) into plain columns for ``pipelines.profile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.errors import LooplineError
from pipelines.profile import Column, Table

#: File suffixes Loopline reads as tables; other files are kept and counted, never profiled.
TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class TableError(LooplineError, ValueError):
    """A data file that cannot be read as a table; the message names it and says why."""


def is_table(path: str | Path) -> bool:
    return str(path).lower().endswith(TABLE_SUFFIXES)


def read_table(path: Path, name: str | None = None) -> Table:
    """Every column of a CSV or Parquet file: numbers as floats (NaN where missing), anything
    else as strings (None where missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    label = name or path.name
    try:
        if path.suffix.lower() == ".csv":
            from pyarrow import csv

            table = csv.read_csv(path, convert_options=csv.ConvertOptions(strings_can_be_null=True))
        else:
            from pyarrow import parquet

            table = parquet.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise TableError(f"{label}: not a readable {path.suffix.lstrip('.')} table ({exc})") from exc
    names = list(table.column_names)
    if len(set(names)) != len(names) or any(not n.strip() for n in names):
        raise TableError(f"{label}: the header has empty or duplicate column names")
    columns: dict[str, Column] = {}
    for col_name, column in zip(names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            columns[col_name] = Column("number", str(kind), np.asarray(values, dtype=float), None)
        elif pa.types.is_null(kind):
            columns[col_name] = Column("number", "null", np.full(table.num_rows, np.nan), None)
        else:
            strings = pc.cast(column, pa.string()).to_pylist()
            columns[col_name] = Column("category", str(kind), None, strings)
    return Table(label, table.num_rows, columns)


def count_rows(path: Path) -> int | None:
    """Rows of a table file (Parquet from its footer), None for anything else or unreadable."""
    if not is_table(path):
        return None
    try:
        if path.suffix.lower() != ".csv":
            from pyarrow import parquet

            return int(parquet.ParquetFile(path).metadata.num_rows)
        return read_table(path).rows
    except (TableError, OSError, ValueError):
        return None
