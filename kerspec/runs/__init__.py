"""Run folders: what `kerspec train` leaves behind, written as training goes.

    runs/NAME-YYYYmmdd-HHMMSS/
      spec.yaml       the spec as resolved (overrides applied, the seed used, data paths absolute)
      run.json        versions, spec sha256, seed, start and end time, status, epochs done
      history.csv     one row per finished epoch, rewritten after each epoch
      checkpoint.npz  after every finished epoch: what `--resume` needs to carry on bit for bit
      weights.npz     final weights (the last finished epoch's, when stopped early)
      metrics.json    final metrics

      .kerspec-manifest.json  the files kerspec wrote here (kerspec.folders); .kerspec-lock while training

Every file is written atomically, so a run stopped at any moment, even by SIGKILL, leaves each
file complete or absent (and at most a temporary `.NAME.XXXXXXXX.tmp`, which the manifest lists
and a run starting or resuming in the folder deletes). A folder that holds anything is not
trained into afresh without `overwrite`, which still replaces only files the manifest lists. A killed run's run.json still says "running"; `--resume` carries it on
from checkpoint.npz, or only writes the final files when it was killed after its last epoch.

`checkpoint.npz` holds `weights/LAYER/WEIGHT`, `optimizer/KEY` (the optimizer's state: iteration
count, current learning rate, slots), `callbacks/KEY/...` (arrays of callbacks' states, such as
EarlyStopping's best weights) and `meta`, a JSON string with the number of finished epochs, the
shuffle and noise generators' states and the callbacks' and history's states.

A run resumes only with the spec it was started with: the resolved specs are compared, and only
the fields in RESUMABLE may differ (more epochs to extend training; the name and description).
"""

from kerspec.runs.folder import RunFolder
from kerspec.runs.info import (
    CHECKPOINT,
    JSON_OBJECT,
    MAX_RUN_JSON_BYTES,
    RUN_FILES,
    RunInfo,
    new_run_dir,
    read_run_info,
    read_run_spec,
    run_seed,
)
from kerspec.runs.listing import describe_run, list_runs, read_history, read_metrics
from kerspec.runs.resumable import RESUMABLE, spec_differences

__all__ = [
    "CHECKPOINT",
    "JSON_OBJECT",
    "MAX_RUN_JSON_BYTES",
    "RESUMABLE",
    "RUN_FILES",
    "RunFolder",
    "RunInfo",
    "describe_run",
    "list_runs",
    "new_run_dir",
    "read_history",
    "read_metrics",
    "read_run_info",
    "read_run_spec",
    "run_seed",
    "spec_differences",
]
