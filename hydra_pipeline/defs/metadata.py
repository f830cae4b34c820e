"""How frames look in Dagster's UI: row counts and column schemas on every stored frame, and
results as sortable tables of rounded numbers rather than text blocks of 17-digit floats."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl

from hydra_core.evaluation.method import DIGITS


def _column_type(dtype: pl.DataType) -> str:
    if dtype.is_float():
        return "float"
    if dtype.is_integer():
        return "int"
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.String:
        return "string"
    return str(dtype)


def column_schema(frame: pl.DataFrame) -> dg.TableSchema:
    """The frame's columns and their types, as Dagster shows them on the asset page."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name, _column_type(dtype)) for name, dtype in frame.schema.items()]
    )


def frame_metadata(frame: pl.DataFrame) -> dict[str, Any]:
    """``dagster/row_count`` and ``dagster/column_schema``: the keys the catalogue reads."""
    return {
        "dagster/row_count": frame.height,
        "dagster/column_schema": dg.MetadataValue.table_schema(column_schema(frame)),
    }


def table_value(frame: pl.DataFrame, digits: int = DIGITS) -> dg.TableMetadataValue:
    """``frame`` as a metadata table, floats rounded to ``digits`` decimals."""
    rounded = frame.with_columns(pl.selectors.float().round(digits))
    return dg.MetadataValue.table(
        records=[dg.TableRecord(row) for row in rounded.iter_rows(named=True)],
        schema=column_schema(frame),
    )
