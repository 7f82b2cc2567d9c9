"""Files in and out: what kerspec writes and reads back (`files`), and the user's data files
read safely (`datafile` names them in errors, `npz` reads .npy/.npz, `csv` reads tables).

The names of `files` are kerspec's everyday writing helpers, so they are importable from here.
"""

from kerspec.io.datafile import some_names
from kerspec.io.files import (
    atomic_write,
    load_weights,
    read_json_as,
    read_npz,
    save_weights,
    save_weights_to,
    write_json,
    write_npz,
    write_predictions,
    write_text,
)

__all__ = [
    "atomic_write",
    "load_weights",
    "read_json_as",
    "read_npz",
    "save_weights",
    "save_weights_to",
    "some_names",
    "write_json",
    "write_npz",
    "write_predictions",
    "write_text",
]
