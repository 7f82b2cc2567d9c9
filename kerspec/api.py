"""The Python API the CLI is a thin layer over.

    import kerspec
    model = kerspec.load("specs/digits_mlp.yaml")
    history = model.fit()
    print(model.evaluate())
    probabilities = model.predict(x)

A spec goes through a Model as a story, each step a call into its module: load (kerspec.spec),
compile (kerspec.graph; kerspec.guards checks the memory it needs; the weights; what each
output's targets look like, from kerspec.training.targets), data (kerspec.training.data), fit
(kerspec.training.loop), save (kerspec.io).
"""

from __future__ import annotations

import difflib
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kerspec import io, threads
from kerspec.errors import DataError, GraphError, KerspecError, RunError, SpecError
from kerspec.folders import OutputFolder
from kerspec.graph import Graph, Params, Plan, compile_spec
from kerspec.guards import check_model
from kerspec.layers import Context
from kerspec.paths import pattern_fields
from kerspec.spec import LoadedSpec, load_spec, parse_spec
from kerspec.spec.overrides import data_override
from kerspec.spec.schema import Compile
from kerspec.training.callbacks import Callback, History
from kerspec.training.data import Dataset, arrays_dataset, load_dataset, load_inputs
from kerspec.training.heads import build_heads, compile_problems, logged_names, output_losses
from kerspec.training.targets import OutputInfo, class_weights, output_targets

if TYPE_CHECKING:
    from kerspec.runs import RunFolder
    from kerspec.training.trainer import Trainer

# Training, run folders, predict's fusions and the summary table are imported where they are
# used: `validate` and `summary` load a model without them.


def load(path: str | Path, overrides: list[str] | None = None, *, seed: int | None = None) -> Model:
    """Load, validate and compile a spec file; `overrides` are `--set` strings (`fit.epochs=3`)."""
    return Model(load_spec(path, overrides), seed=seed)


def from_yaml(text: str, *, seed: int | None = None) -> Model:
    """A model from spec text; relative data paths resolve against the current folder."""
    return Model(parse_spec(text), seed=seed)


class Model:
    def __init__(self, loaded: LoadedSpec, *, seed: int | None = None):
        self.loaded = loaded
        self.spec = loaded.spec
        self.dtype = np.dtype(self.spec.dtype)
        self.graph: Graph = compile_spec(loaded)
        check_model(self.graph, loaded.source, self.spec.fit.batch_size)  # before the weights exist
        self.plan = Plan(self.graph)
        # predict's plan, with BatchNormalization folded into the layer before it, or `plan`
        # when nothing folds (made at the first predict).
        self._inference_plan: Plan | None = None
        if seed is None:
            seed = self.spec.seed
        self.seed = seed if seed is not None else secrets.randbits(32)
        init_seq, shuffle_seq, noise_seq = np.random.SeedSequence(self.seed).spawn(3)
        self.shuffle_rng = np.random.default_rng(shuffle_seq)
        self.ctx = Context(training=False, rng=np.random.default_rng(noise_seq))
        # predict and evaluate keep their buffers (a convolution's output at 1,024 samples is
        # tens of MB) here between calls, apart from the training ones: memory handed back to
        # the system and taken again is fresh pages to fault in on every call.
        self.inference_ctx = Context(training=False, rng=self.ctx.rng, reuse_buffers=True)
        self._inference_lock = threading.Lock()
        init_rng = np.random.default_rng(init_seq)
        self.params: Params = {
            owner: {s.name: s.initializer(s.shape, init_rng, self.dtype) for s in specs}
            for owner, specs in self.graph.weights.items()
            if specs
        }
        # What each output's targets look like, from its loss: every data loader checks against it.
        shapes = {name: self.graph.output_shape(ref) for name, ref in zip(self.output_names, self.graph.outputs)}
        self.targets: dict[str, OutputInfo] = output_targets(shapes, output_losses(self.spec.compile, self.output_names))
        self._trainer: Trainer | None = None

    # -- description --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def input_names(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def output_names(self) -> list[str]:
        return [str(ref) for ref in self.graph.outputs]

    def count_params(self) -> tuple[int, int]:
        """(trainable, non-trainable) parameter counts, as Keras's summary gives them."""
        trainable_owners = {n.owner for n in self.graph.nodes if n.layer.trainable}
        counts = [0, 0]
        for owner, specs in self.graph.weights.items():
            for spec in specs:
                size = int(np.prod(spec.shape))
                counts[0 if spec.trainable and owner in trainable_owners else 1] += size
        return counts[0], counts[1]

    def summary(self) -> str:
        """The Keras-style summary table as text."""
        from kerspec.summary import render_summary

        trainable, frozen = self.count_params()
        return render_summary(self.graph, trainable, frozen, self.dtype.itemsize)

    def summary_data(self) -> dict:
        from kerspec.summary import summary_rows

        trainable, frozen = self.count_params()
        return {
            "name": self.name,
            "layers": summary_rows(self.graph),
            "total_params": trainable + frozen,
            "trainable_params": trainable,
            "non_trainable_params": frozen,
        }

    # -- compile: the spec's compile section as the trainer -----------------------------------

    @property
    def trainer(self) -> Trainer:
        from kerspec.training.trainer import Trainer

        if self._trainer is None:
            compile_ = self._compile()
            heads = build_heads(compile_, self.output_names)
            self._trainer = Trainer(self.graph, self.plan, self.params, heads, compile_.optimizer)
        return self._trainer

    def _compile(self) -> Compile:
        """The spec's compile section, refused (GraphError) with every problem training has with it."""
        problems = compile_problems(self.spec.compile, self.output_names, self.loaded.source.where)
        if problems:
            raise GraphError(problems)
        return self.spec.compile

    def problems(self) -> list[KerspecError]:
        """Every problem `fit` would refuse the spec for before reading any data.

        A spec with neither `compile` nor `data` describes a model to predict with, and has none.
        """
        compile_ = self.spec.compile
        if compile_ is None and self.spec.data is None:
            return []
        heads = compile_problems(compile_, self.output_names, self.loaded.source.where)
        if compile_ is None or compile_.loss is None:
            return heads
        problems = self.class_weight_problems(with_sample_weights=False)
        if heads:
            return problems + heads  # the names callbacks monitor come from the heads
        data = self.spec.data
        validation = (data is not None and data.validation is not None) or self.spec.fit.validation_split > 0
        return problems + self._callback_problems(self.logged_names(validation=validation))

    def logged_names(self, *, validation: bool) -> dict[str, str]:
        """Every name training will log, with whether it should go down (`min`) or up (`max`)."""
        learning_rate = any(c.uses_learning_rate() for c in self.spec.fit.callbacks)
        return logged_names(self.trainer.heads, validation=validation, learning_rate=learning_rate)

    def _check_callbacks(self, directions: dict[str, str]) -> None:
        """The spec's fit.callbacks, checked against what the model logs."""
        problems = self._callback_problems(directions)
        if problems:
            raise SpecError(problems)

    def _callback_problems(self, directions: dict[str, str]) -> list[KerspecError]:
        where = self.loaded.source.where
        raw = (self.loaded.raw.get("fit") or {}).get("callbacks") or []
        problems = []
        for index, config in enumerate(self.spec.fit.callbacks):
            entry = raw[index] if index < len(raw) and isinstance(raw[index], dict) else {}
            at = ("fit", "callbacks", index)
            monitor = getattr(config, "monitor", None)
            if monitor is not None and monitor not in directions:
                close = difflib.get_close_matches(monitor, list(directions), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(KerspecError(
                    f"{config.type} monitors {monitor!r}, which this model does not log"
                    f" (it logs: {', '.join(directions)}){hint}",
                    where((*at, "monitor") if "monitor" in entry else at)))
            if config.uses_learning_rate() and self._compile().optimizer.scheduled:
                problems.append(KerspecError(
                    f"{config.type} sets the learning rate, but compile.optimizer.learning_rate is a"
                    " schedule; give the optimizer a number, or drop the callback", where(at)))
            filepath = getattr(config, "filepath", None)
            unknown = [f for f in pattern_fields(filepath or "") if f != "epoch" and f not in directions]
            if unknown:
                problems.append(KerspecError(
                    f"{config.type} formats {unknown[0]!r} into its filepath, which this model"
                    f" does not log (it logs: epoch, {', '.join(directions)})",
                    where((*at, "filepath") if "filepath" in entry else at)))
        return problems

    def class_weight_problems(self, *, with_sample_weights: bool) -> list[KerspecError]:
        if not self.spec.fit.class_weight:
            return []
        where = self.loaded.source.where(("fit", "class_weight"))
        if len(self.output_names) != 1:
            return [KerspecError(
                "fit.class_weight is only supported for models with a single output; give"
                " per-output sample weights in the data instead", where)]
        if with_sample_weights:
            return [KerspecError(
                "fit.class_weight and sample weights in the data cannot be used together"
                " (as in Keras)", where)]
        return []

    # -- data ---------------------------------------------------------------------------------

    def dataset(self, which: str, *, path: str | None = None, require_targets: bool = True) -> Dataset:
        """Load the spec's `data.<which>` entry, or `path` when given."""
        if require_targets:
            self._compile()  # targets are checked against the losses, so say first if they are wrong
        section = self.spec.data
        if path is None:
            entry = getattr(section, which) if section else None
            if entry is None:
                raise DataError(f"the spec has no data.{which} entry (give one with --data)",
                                self.loaded.source.where(("data",)))
            base = self.loaded.base_dir
        else:
            entry = self.data_override(which, str(path))
            base = Path.cwd()
        return load_dataset(
            entry,
            base_dir=base,
            inputs=self.graph.input_shapes(),
            outputs=self.targets,
            dtype=self.dtype,
            rng=self.shuffle_rng,
            require_targets=require_targets,
        )

    def data_override(self, which: str, given: str) -> str | dict:
        """The data entry `--data given` makes: it replaces the spec's `data.<which>` entry (else
        the nearest one: test, validation, train) and keeps that entry's options."""
        section = self.spec.data
        order = (which, *(w for w in ("test", "validation", "train") if w != which))
        replaced = next((getattr(section, w) for w in order if section and getattr(section, w)), None)
        return data_override(given, "--validation" if which == "validation" else "--data", replaced)

    def _given_data(self, x, y, where: str) -> Dataset | None:
        """What fit was handed: nothing (the spec's data), a Dataset, or arrays x and y."""
        if x is None and y is None:
            return None
        if isinstance(x, Dataset):
            if y is not None:
                raise KerspecError(f"{where}: a Dataset holds its targets; give no y with it")
            return x
        if x is None or y is None:
            raise KerspecError(f"{where}: give both x and y (inputs and targets), or neither for the spec's data")
        return arrays_dataset(x, y, inputs=self.graph.input_shapes(), outputs=self.targets,
                              dtype=self.dtype, where=where)

    def evaluation_data(self, path: str | None = None) -> tuple[str, Dataset]:
        """What `evaluate` scores: `path` (in place of the test entry), else the spec's test data,
        else its validation data; with which of them it is."""
        section = self.spec.data
        if path is not None:
            return "test", self.dataset("test", path=path)
        if section is None or (section.test is None and section.validation is None):
            raise DataError(
                "the spec has no data.test or data.validation entry to evaluate on"
                " (give one with --data)",
                self.loaded.source.where(("data",)),
            )
        which = "test" if section.test is not None else "validation"
        return which, self.dataset(which)

    def _require_targets(self, data: Dataset) -> None:
        if data.y is None:
            raise DataError("this data has no targets, so it cannot be trained or scored on", data.source)

    def _with_class_weight(self, train: Dataset) -> Dataset:
        """The training data with Keras's class_weight as its sample weights."""
        class_weight = self.spec.fit.class_weight
        if not class_weight:
            return train
        problems = self.class_weight_problems(with_sample_weights=bool(train.sample_weight))
        if problems:
            raise SpecError(problems)
        (name,) = self.output_names
        weights = class_weights(train.y[name], class_weight, self.dtype)
        return Dataset(train.x, train.y, train.source, {name: weights})

    def read_inputs(self, path: str | Path, *, exclude: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Inputs for `predict` from a file; `exclude` names .csv columns not to feed the model."""
        return load_inputs(path, inputs=self.graph.input_shapes(), dtype=self.dtype, exclude=exclude)

    # -- fit and evaluate ---------------------------------------------------------------------

    def fit(
        self,
        x=None,
        y=None,
        *,
        validation_data=None,
        validation: Dataset | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        callbacks: list[Callback] = (),
        initial_epoch: int | None = None,
        run: RunFolder | None = None,
        run_dir: str | Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> History:
        """Train with the spec's fit settings (arguments override them); returns the history.

        As in Keras, `fit(x, y)` takes arrays (one per input and output: an array, a list in
        order, or a dict by name) and `validation_data=(x_val, y_val)`; without them, the spec's
        data. `x` may also be a Dataset (then no `y`).

        `run` (a RunFolder) or `run_dir` writes a run folder as training goes; with `resume`,
        `run_dir` must hold an earlier run of this spec, which carries on from its last
        finished epoch. A non-empty `run_dir` is refused unless `overwrite`, which replaces
        only files kerspec wrote there (kerspec.folders). Ctrl-C stops after the current batch and raises `Interrupted`.
        """
        from kerspec.runs import RunFolder
        from kerspec.training import loop

        train = self._given_data(x, y, "fit(x, y)")
        if validation_data is not None:
            if validation is not None:
                raise KerspecError("fit() takes validation_data or validation, not both")
            if not (isinstance(validation_data, tuple | list) and len(validation_data) == 2):
                raise KerspecError("fit(validation_data=...) takes a pair (x_val, y_val)")
            validation = self._given_data(*validation_data, "fit(validation_data=(x, y))")
        fit = self.spec.fit
        batch_size = batch_size or fit.batch_size
        if batch_size != fit.batch_size:
            check_model(self.graph, self.loaded.source, batch_size)  # compiling checked the spec's size
        trainer = self.trainer
        if train is None:
            train = self.dataset("train")
        self._require_targets(train)
        # As in Keras, validation data (given, or the spec's) takes precedence over validation_split.
        if validation is None and self.spec.data and self.spec.data.validation is not None:
            validation = self.dataset("validation")
        elif validation is None and fit.validation_split > 0:
            train, validation = loop.split_validation(train, fit.validation_split)
        if validation is not None:
            self._require_targets(validation)
        own_run = run is None and run_dir is not None
        directions = self.logged_names(validation=validation is not None)
        train = self._with_class_weight(train)
        self._check_callbacks(directions)
        if own_run:
            run = RunFolder(Path(run_dir), self, resume=resume, overwrite=overwrite)
        try:
            folder = run.output if run else OutputFolder(Path.cwd())
            spec_callbacks = [config.build(folder) for config in self.spec.fit.callbacks]
            self.ctx.training = True
            return loop.fit(
                trainer,
                train,
                inputs=self.input_names,
                outputs=self.output_names,
                epochs=epochs or fit.epochs,
                batch_size=batch_size,
                shuffle=fit.shuffle,
                shuffle_rng=self.shuffle_rng,
                ctx=self.ctx,
                validation=validation,
                callbacks=[*callbacks, *([run] if run else [])],
                spec_callbacks=spec_callbacks,
                initial_epoch=fit.initial_epoch if initial_epoch is None else initial_epoch,
                directions=directions,
                resume=run.checkpoint if run else None,
                resume_file=str(run.checkpoint_file) if run else "checkpoint",
            )
        finally:
            self.ctx.training = False
            if own_run:
                run.release()

    def evaluate(self, data: Dataset | None = None, *, batch_size: int | None = None) -> dict[str, float]:
        """Loss and metrics on `data`, else the spec's test data, else its validation data."""
        from kerspec.training import loop

        if data is None:
            _, data = self.evaluation_data()
        self._require_targets(data)
        with self._inference() as ctx, threads.BlasThreads():
            return loop.evaluate(
                self.trainer,
                data,
                inputs=self.input_names,
                outputs=self.output_names,
                batch_size=batch_size or self.spec.fit.batch_size,
                ctx=ctx,
            )

    @contextmanager
    def _inference(self) -> Iterator[Context]:
        """The kept inference context, or, while another thread is using it (predict from
        several threads at once), a fresh one: buffers are never shared by two calls."""
        if not self._inference_lock.acquire(blocking=False):
            yield Context(training=False, rng=self.ctx.rng, reuse_buffers=True)
            return
        try:
            yield self.inference_ctx
        finally:
            self._inference_lock.release()

    # -- predict ------------------------------------------------------------------------------

    def predict(self, x: dict[str, np.ndarray] | np.ndarray, *, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Outputs keyed by output name; inference mode, in large batches, with no backward cache."""
        from kerspec.graph.fusions import folded_params

        if isinstance(x, np.ndarray):
            if len(self.input_names) != 1:
                raise DataError(f"the model has {len(self.input_names)} inputs; pass a dict keyed by name")
            x = {self.input_names[0]: x}
        missing = [name for name in self.input_names if name not in x]
        if missing:
            raise DataError(f"no array for input(s) {', '.join(missing)}")
        xs = [np.asarray(x[name], dtype=self.dtype) for name in self.input_names]
        n = len(xs[0])
        results: list[np.ndarray] | None = None
        if self._inference_plan is None:
            folded = Plan(self.graph, inference=True)
            self._inference_plan = folded if folded.folds else self.plan
        plan = self._inference_plan
        params = folded_params(self.params, plan.folds)
        with self._inference() as ctx, threads.BlasThreads():
            for start in range(0, n, batch_size):
                batch = [a[start : start + batch_size] for a in xs]
                outputs = plan.forward(params, batch, ctx, record=False).outputs
                if results is None:
                    results = [np.empty((n, *o.shape[1:]), o.dtype) for o in outputs]
                for result, output in zip(results, outputs):
                    result[start : start + len(output)] = output
                threads.after_batch()
        if results is None:
            raise RunError("no samples to predict")
        return dict(zip(self.output_names, results))

    # -- save: weights ------------------------------------------------------------------------

    def save_weights(self, path: str | Path) -> None:
        io.save_weights(Path(path), self.params)

    def load_weights(self, path: str | Path) -> None:
        io.load_weights(Path(path), self.params)
