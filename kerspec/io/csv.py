"""Reading CSV tables: a header naming the columns, then rows of text cells, checked line by line.

Cells stay text until a caller asks for a column as numbers, so a column of class names and a
column of numbers live in one table; every problem names its line and column.
"""

from __future__ import annotations

import csv
import difflib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kerspec.errors import DataError
from kerspec.io.datafile import DataFile, some_names

# A number needs a few dozen characters and a label not many more. Held as one numpy text array,
# every cell would take the widest one's room (a 160 kB file with one 130,000-character cell
# asked for 7.3 GiB), so cells stay Python strings, column by column, each of bounded length.
MAX_CSV_CELL = 1024


class CsvTable:
    """A CSV file with a header, held as stripped text cells in columns; converted on demand."""

    def __init__(self, file: DataFile):
        self.file = file
        rows: list[list[str]] = []
        lines: list[int] = []
        header: list[str] | None = None
        header_line = 0
        try:
            with open(file.path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle, strict=True)
                for row in reader:
                    if not row:
                        continue
                    if header is None:
                        header = [cell.strip() for cell in row]
                        header_line = reader.line_num
                        continue
                    if len(row) != len(header):
                        raise file.error(
                            f"line {reader.line_num}: {len(row)} values, but the header (line {header_line})"
                            f" has {len(header)} columns"
                        )
                    widest = max(map(len, row))
                    if widest > MAX_CSV_CELL:
                        raise file.error(
                            f"line {reader.line_num}: a cell of {widest:,} characters; the limit is"
                            f" {MAX_CSV_CELL:,}"
                        )
                    rows.append([cell.strip() for cell in row])
                    lines.append(reader.line_num)
        except csv.Error as error:
            raise file.error(f"line {reader.line_num}: not valid CSV: {error}") from None
        except UnicodeDecodeError as error:
            raise file.error(f"is not UTF-8 text: {error.reason} at byte {error.start}") from None
        except OSError as error:
            raise file.error(f"cannot be read: {error.strerror or error}") from None
        if header is None:
            raise file.error("is empty; expected a header row naming the columns")
        if "" in header:
            raise file.error(f"line {header_line}: column {header.index('') + 1} has no name")
        repeated = [name for i, name in enumerate(header) if name in header[:i]]
        if repeated:
            raise file.error(f"line {header_line}: column {repeated[0]!r} appears twice")
        if not rows:
            raise file.error("has a header but no rows")
        self.header = header
        self.lines = np.asarray(lines)
        self.columns = [list(column) for column in zip(*rows)]

    def column(self, name: str) -> int:
        if name not in self.header:
            close = difflib.get_close_matches(name, self.header, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.file.error(f"has no column {name!r}{hint} (columns: {some_names(self.header)})")
        return self.header.index(name)

    def _empty(self, j: int) -> None:
        bad = next((i for i, cell in enumerate(self.columns[j]) if not cell), None)
        if bad is not None:
            raise self.file.error(
                f"line {self.lines[bad]}, column {self.header[j]!r}: empty cell"
            )

    def numbers(self, j: int) -> np.ndarray | None:
        """Column j as float64, or None when a cell is not a number."""
        self._empty(j)
        column = self.columns[j]
        try:
            return np.fromiter(map(float, column), np.float64, len(column))
        except ValueError:
            return None

    def features(self, columns: list[int]) -> np.ndarray:
        values = []
        for j in columns:
            column = self.numbers(j)
            if column is None:
                i = next(i for i, cell in enumerate(self.columns[j]) if not _is_number(cell))
                raise self.file.error(
                    f"line {self.lines[i]}, column {self.header[j]!r}: {self.columns[j][i]!r} is"
                    " not a number"
                )
            values.append(column)
        return np.stack(values, axis=1)

    def locate(self, columns: list[int]) -> Callable[[tuple[int, ...]], str]:
        def at(index: tuple[int, ...]) -> str:
            line = f"line {self.lines[index[0]]}"
            return f"{line}, column {self.header[columns[index[1]]]!r}" if len(index) > 1 else line

        return at


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv_columns(path: Path | str, names: list[str], base_dir: Path | None = None) -> dict[str, list[str]]:
    """The text of some columns of a CSV file (an id column, text labels), by column name."""
    table = CsvTable(DataFile(path, base_dir))
    return {name: list(table.columns[table.column(name)]) for name in names}


def csv_text_labels(path: Path | str, column: str, base_dir: Path) -> list[str] | None:
    """The text labels of a CSV target column in class-index order (sorted), as training mapped
    them; None when the column holds numbers or the file cannot be read."""
    try:
        (cells,) = read_csv_columns(path, [column], base_dir).values()
    except DataError:
        return None
    if all(_is_number(cell) for cell in cells):
        return None
    return sorted(set(cells))
