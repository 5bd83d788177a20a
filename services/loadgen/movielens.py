"""The MovieLens 100K copy shipped in data/ (terms in data/README.md): where it lies in a
checkout, and its items as the texts the encoder reads. The demo, the benchmarks and the
tests all use it from here."""

from __future__ import annotations

from pathlib import Path

MOVIELENS_100K = Path(__file__).resolve().parents[2] / "data" / "movielens-100k"


def item_texts(folder: Path = MOVIELENS_100K) -> list[str]:
    """'Title (year) genres' for each item, in file order (1,682 for MovieLens 100K)."""
    lines = (folder / "ml-100k.item").read_text(encoding="utf-8").splitlines()[1:]
    texts = []
    for line in lines:
        _, title, year, genres = line.split("\t")
        texts.append(f"{title} ({year}) {genres}" if year else f"{title} {genres}")
    return texts
