"""Callbacks: hooks the training loop calls, as Keras's do. Progress display is one of them.

The spec's `fit.callbacks` entries are validated configurations in the CALLBACKS registry, with
Keras's names, arguments and defaults (`{type: EarlyStopping, monitor: val_loss, patience: 3}`);
`config.build(folder)` makes the callback that runs. A callback reaches the training through
`self.session` (the trainer's weights and optimizer state, `stop_training`), and hands its
state to checkpoints through `state()` / `restore()`, so that a resumed run carries on exactly
where the interrupted one was (an EarlyStopping's wait and best value, its best weights).
"""

# Imported in the order the catalog lists them (Keras's order, as in error messages).
# isort: off
from kerspec.training.callbacks.base import CALLBACKS, CallbackConfig
from kerspec.training.session import Arrays, Callback, History
from kerspec.training.callbacks.monitor import MonitorCallback, MonitorConfig, monitor_direction
from kerspec.training.callbacks.early_stopping import EarlyStopping, EarlyStoppingConfig
from kerspec.training.callbacks.model_checkpoint import ModelCheckpoint, ModelCheckpointConfig
from kerspec.training.callbacks.learning_rate import (
    LearningRateScheduler,
    LearningRateSchedulerConfig,
    ReduceLROnPlateau,
    ReduceLROnPlateauConfig,
)
from kerspec.training.callbacks.csv_logger import CSVLogger, CSVLoggerConfig
from kerspec.training.callbacks.terminate_on_nan import TerminateOnNaN, TerminateOnNaNConfig
# isort: on

__all__ = [
    "CALLBACKS",
    "Arrays",
    "CSVLogger",
    "CSVLoggerConfig",
    "Callback",
    "CallbackConfig",
    "EarlyStopping",
    "EarlyStoppingConfig",
    "History",
    "LearningRateScheduler",
    "LearningRateSchedulerConfig",
    "ModelCheckpoint",
    "ModelCheckpointConfig",
    "MonitorCallback",
    "MonitorConfig",
    "ReduceLROnPlateau",
    "ReduceLROnPlateauConfig",
    "TerminateOnNaN",
    "TerminateOnNaNConfig",
    "monitor_direction",
]
