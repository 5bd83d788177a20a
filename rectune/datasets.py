"""Datasets: loaders of the MovieLens atomic files and generic CSV, and where the MovieLens
100K copy shipped in data/ lies (terms in data/README.md). ScoringService loads its
catalogue with these; the demo, the benchmarks and the tests find their data here.

Loading is all or nothing: a bad row stops the load with its file and line, before
anything reaches a store."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

from rectune.domain.events import Interaction, Item

MOVIELENS_100K = Path(__file__).resolve().parents[1] / "data" / "movielens-100k"


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message starts with ``file:line:``."""


def _rows(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}:1: empty file (a header line is expected)")
        names = [column.split(":")[0].strip() for column in header]  # atomic headers are name:type
        for line, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(names):
                raise DatasetError(
                    f"{path}:{line}: expected {len(names)} columns ({', '.join(names)}), got {len(values)}"
                )
            yield line, dict(zip(names, values, strict=True))


def _number(path: Path, line: int, row: dict[str, str], column: str) -> float:
    try:
        value = float(row[column])
    except KeyError:
        raise DatasetError(f"{path}:1: missing column {column!r}") from None
    except ValueError:
        raise DatasetError(f"{path}:{line}: {column} must be a number, got {row[column]!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}:{line}: {column} must be finite, got {row[column]!r}")
    return value


def _required(path: Path, line: int, row: dict[str, str], column: str) -> str:
    if column not in row:
        raise DatasetError(f"{path}:1: missing column {column!r}")
    value = row[column].strip()
    if not value:
        raise DatasetError(f"{path}:{line}: {column} must not be empty")
    return value


def load_interactions(path: Path, delimiter: str = ",") -> list[Interaction]:
    """Columns user_id, item_id, rating, timestamp (unix seconds)."""
    return [interaction for chunk in iter_interactions(path, delimiter) for interaction in chunk]


def iter_interactions(path: Path, delimiter: str = ",", chunk: int = 100_000) -> Iterator[list[Interaction]]:
    """The interactions file in lists of at most ``chunk``: a large file is never held whole
    as Python objects (ten million rows would be gigabytes of them)."""
    batch: list[Interaction] = []
    for line, row in _rows(path, delimiter):
        batch.append(
            Interaction(
                _required(path, line, row, "user_id"),
                _required(path, line, row, "item_id"),
                _number(path, line, row, "rating"),
                _number(path, line, row, "timestamp"),
            )
        )
        if len(batch) == chunk:
            yield batch
            batch = []
    if batch:
        yield batch


def item_text(title: str, year: str, genres: str) -> str:
    """What the encoder reads for a movie: 'Title (year) genres'."""
    return " ".join(part for part in (title, f"({year})" if year else "", genres) if part)


def load_items(path: Path, delimiter: str = ",") -> list[Item]:
    """Columns item_id and either text, or title (+ release_year) + genres (or class)."""
    items = []
    for line, row in _rows(path, delimiter):
        item_id = _required(path, line, row, "item_id")
        if "text" in row:
            text = _required(path, line, row, "text")
        else:
            title = row.get("title", row.get("movie_title", "")).strip()
            if not title:
                raise DatasetError(f"{path}:{line}: title must not be empty (or give a text column)")
            genres = row.get("genres", row.get("class", "")).strip()
            text = item_text(title, row.get("release_year", "").strip(), genres)
        attributes = {k: v for k, v in row.items() if k not in ("item_id", "text") and v}
        items.append(Item(item_id, text, attributes))
    return items


def load_movielens_atomic(folder: Path) -> tuple[list[Item], list[Interaction]]:
    """A MovieLens folder in the atomic format (<name>.item and <name>.inter, tab-separated)."""
    item_files, inter_files = sorted(folder.glob("*.item")), sorted(folder.glob("*.inter"))
    if len(item_files) != 1 or len(inter_files) != 1:
        raise DatasetError(f"{folder}: expected one *.item and one *.inter file")
    return load_items(item_files[0], "\t"), load_interactions(inter_files[0], "\t")


def item_texts(folder: Path = MOVIELENS_100K) -> list[str]:
    """The texts the encoder reads for a MovieLens folder's items, in file order (1,682 for
    MovieLens 100K)."""
    items, _ = load_movielens_atomic(folder)
    return [item.text for item in items]
