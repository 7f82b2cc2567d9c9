"""The `kerspec` command: each command parses options, calls the API, and renders the result.

User errors (KerspecError) are caught in one place, printed as `WHERE: message` and exit 1;
usage errors exit 2 (Typer's own); Ctrl-C 130 and SIGTERM 143 (see `kerspec.stopping`).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated

import typer

from kerspec.cli_types import Group, integer, lazy_module, plain_commands
from kerspec.errors import KerspecError, Problems
from kerspec.stopping import stopped

# NumPy, pydantic and the layer catalog load when a command first needs them, not for --help.
api = lazy_module("kerspec.api")
console = lazy_module("kerspec.console")

app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Declarative deep learning: Keras-style models as YAML specs, trained with NumPy.",
)

SpecArg = Annotated[Path, typer.Argument(metavar="SPEC", help="The model spec (YAML).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KEY=VALUE", help="Override a spec field: KEY=VALUE, e.g. fit.epochs=3.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", parser=integer(0, 2**64 - 1), metavar="N", help="Seed for every random draw.", show_default=False)]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", parser=integer(1), metavar="N", help="Batch size.", show_default=False)]
DataOpt = Annotated[str | None, typer.Option("--data", metavar="FILE", help="Data file instead of the spec's (keeps its options), or a YAML mapping.", show_default=False)]
WeightsOpt = Annotated[Path, typer.Option("--weights", metavar="FILE", help="Weights file (.npz).", show_default=False)]


def _version(value: bool) -> None:
    if value:
        from kerspec.version import __version__

        console.out.print(f"kerspec {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version, help="Print kerspec's version and exit.")] = False,
) -> None:
    """Declarative deep learning: Keras-style models as YAML specs, trained with NumPy."""


@contextmanager
def user_errors():
    """The one place a user error becomes a message and exit code 1."""
    try:
        yield
    except Problems as err:
        for problem in err.problems:
            console.err.print(str(problem), markup=False)
        raise typer.Exit(1) from None
    except KerspecError as err:
        console.err.print(str(err), markup=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(stopped(signal.SIGINT)) from None
    except MemoryError as err:
        # numpy names the array it could not allocate; Python's own MemoryError says nothing.
        what = str(err) or "an allocation"
        console.err.print(f"not enough memory: {what}", markup=False)
        raise typer.Exit(1) from None


def _notes(folder):
    """A callback that prints the run folder's notes (resuming, a lock taken over) once its
    checkpoint is accepted."""
    from kerspec.training.callbacks import Callback

    class Notes(Callback):
        def on_train_begin(self, logs=None):
            for note in folder.notes:
                console.err.print(f"{folder.path}: {note}", markup=False)

    return Notes()


def _load(spec: Path, sets: list[str] | None, seed: int | None = None):
    model = api.load(spec, sets or [], seed=seed)
    for note in model.loaded.notes:
        console.err.print(str(note), markup=False)
    return model


@app.command()
def validate(
    specs: Annotated[list[Path], typer.Argument(metavar="SPEC...", help="Spec files to check.", show_default=False)],
    data: Annotated[
        bool | None,
        typer.Option("--data/--no-data", help="Also load the data files against the model"
                     " (default: when all of them exist).", show_default=False),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check specs as train would, before and (with --data) with the data, and sweep files as
    sweep would; print every problem as FILE:LINE:COL: message."""
    from kerspec.checks import check_file

    report = []
    for spec in specs:
        problems, notes = check_file(spec, data=data)
        report.append({"file": str(spec), "problems": [str(p) for p in problems], "notes": [str(n) for n in notes]})
    failed = any(r["problems"] for r in report)
    if json_out:
        console.emit_json({"ok": not failed, "specs": report})
    else:
        for entry in report:
            for problem in entry["problems"] + entry["notes"]:
                console.err.print(problem, markup=False)
            if not entry["problems"]:
                console.out.print(f"{entry['file']}: ok", markup=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def summary(spec: SpecArg, set_: SetOpt = None, json_out: JsonOpt = False) -> None:
    """The Keras-style summary: layers, output shapes, parameter counts."""
    with user_errors():
        model = _load(spec, set_, seed=0)
    if json_out:
        console.emit_json(model.summary_data())
    else:
        console.out.print(model.summary().rstrip("\n"), markup=False)


@app.command()
def train(
    spec: SpecArg,
    data: DataOpt = None,
    validation: Annotated[str | None, typer.Option("--validation", metavar="FILE", help="Validation data file.", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", parser=integer(1), metavar="N", help="Number of epochs.", show_default=False)] = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = None,
    set_: SetOpt = None,
    init_weights: Annotated[Path | None, typer.Option("--init-weights", metavar="FILE", help="Start from these weights.", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="Run folder (default runs/NAME-TIME).", show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option("--resume", metavar="DIR", help="Carry on an interrupted run folder from its last finished epoch.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Train into a non-empty --out, replacing only the files an earlier kerspec run wrote there.")] = False,
    seeds: Annotated[int | None, typer.Option("--seeds", parser=integer(2), metavar="N", help="Train over this many seeds (from --seed, else 0) as a small sweep; print each metric's spread.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train SPEC with its data and fit settings; write a run folder."""
    if seeds is not None:
        from kerspec.sweep.commands import train_seeds

        others = {"--data": data, "--validation": validation, "--init-weights": init_weights, "--resume": resume}
        with user_errors():
            train_seeds(spec, seeds, seed=seed, sets=set_ or [], epochs=epochs, batch_size=batch_size,
                        out=out, json_out=json_out, others=others)
        return
    from kerspec.runs import RunFolder, new_run_dir, run_seed
    from kerspec.training.loop import Interrupted

    progress = console.RichProgress()
    with user_errors(), ExitStack() as stack:
        if resume is not None and (out is not None or init_weights is not None or overwrite):
            raise KerspecError("--resume continues the run in its own folder, from its own weights;"
                               " it cannot be combined with --out, --overwrite or --init-weights")
        if resume is not None and seed is None:
            seed = run_seed(resume)
        model = _load(spec, set_, seed)
        if init_weights is not None:
            model.load_weights(init_weights)
        train_data = model.dataset("train", path=data)
        validation_data = model.dataset("validation", path=validation) if validation else None
        run_dir = resume or out or new_run_dir(Path("runs"), model.name)
        settings = {"epochs": epochs, "batch_size": batch_size}
        paths = {"train": data, "validation": validation}
        entries = {k: model.data_override(k, v) for k, v in paths.items() if v is not None}
        folder = RunFolder(
            run_dir,
            model,
            fit={k: v for k, v in settings.items() if v is not None},
            data=entries,
            resume=resume is not None,
            overwrite=overwrite,
            final_metrics=True,
        )
        stack.callback(folder.release)
        try:
            history = model.fit(
                train_data,
                validation=validation_data,
                epochs=epochs,
                batch_size=batch_size,
                callbacks=[_notes(folder), progress],
                run=folder,
            )
        except Interrupted as err:
            progress.close()
            repeat = [*(f"--set {s}" for s in set_ or []), *(f"{k} {v}" for k, v in (
                ("--data", data), ("--validation", validation), ("--epochs", epochs),
                ("--batch-size", batch_size)) if v is not None)]
            if err.epochs_done:
                hint = " ".join([f"kerspec train {spec} --resume {run_dir}", *repeat])
                message = f"the run folder {run_dir} holds the last finished epoch. Resume with: {hint}"
            else:
                hint = " ".join([f"kerspec train {spec} --out {run_dir} --overwrite", *repeat])
                message = f"nothing to resume; start it afresh with: {hint}"
            console.err.print(f"{err.message}; {message}", markup=False)
            raise typer.Exit(128 + err.signum) from None
        finally:
            progress.close()
        for note in folder.session.notes if folder.session else []:
            console.err.print(note, markup=False)
        final = history.last()
        try:
            if data is None and model.spec.data is not None and model.spec.data.test is not None:
                final.update({f"test_{k}": v for k, v in model.evaluate().items()})
        except KerspecError:
            folder.end()  # training ended; the test data is what failed
            raise
        folder.write_metrics(final)  # then run.json says how the run ended
    if json_out:
        console.emit_json({"run": str(run_dir), "seed": model.seed, "metrics": final, "history": history.history})
    else:
        console.emit_curves(history.history)
        console.emit_metrics(f"Trained {model.name} (seed {model.seed}); run folder {run_dir}", final)


@app.command()
def runs(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder of runs (default: runs).")] = Path("runs"),
    wide: Annotated[bool, typer.Option("--wide", help="Every column: spec, start, all final metrics.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List training runs: spec, epochs, final metrics, start, duration, status."""
    from kerspec.runs import list_runs

    problems: list[KerspecError] = []
    with user_errors():
        found = list_runs(folder, problems)
    if json_out:
        console.emit_json(found)
    elif not found and not problems:
        console.err.print(f"no runs in {folder}", markup=False)
    elif found:
        console.emit_runs(found, folder, wide=wide)
    for problem in problems:
        console.err.print(f"{problem} (left out)", markup=False)
    if problems:
        raise typer.Exit(1)


@app.command()
def curves(
    runs_: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The drawing: .svg, or .png (needs matplotlib).", show_default=False)],
) -> None:
    """Draw the training curves (loss and each metric, training and validation) of runs."""
    with user_errors():
        from kerspec.curves import write_curves

        names = write_curves(runs_, output)
    console.out.print(f"Wrote {output}: {', '.join(names)}", markup=False)


@app.command()
def evaluate(
    spec: SpecArg,
    weights: WeightsOpt,
    data: DataOpt = None,
    batch_size: BatchOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Loss and metrics on the spec's test (else validation) data, or --data."""
    with user_errors():
        model = _load(spec, set_, seed=0)
        model.load_weights(weights)
        which, dataset = model.evaluation_data(data)
        scores = model.evaluate(dataset, batch_size=batch_size)
    path = dataset.source
    if data is None and path != "random":  # the spec's entry: relative to the spec, shown from here
        path = os.path.relpath(model.loaded.base_dir / path)
    used = {"which": which, "path": path, "samples": dataset.samples}
    if json_out:
        console.emit_json({"data": used, "metrics": scores})
    else:
        console.emit_metrics(f"Evaluated {model.name} on the {which} data, {path} ({dataset.samples:,} samples)", scores)


@app.command()
def predict(
    spec: SpecArg,
    weights: WeightsOpt,
    input_: Annotated[Path, typer.Option("--input", metavar="FILE", help="Inputs: .npy, .npz or .csv.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="FILE", help="Predictions: .npz, .npy or .csv (for a classifier, with the predicted class).", show_default=False)],
    keep_columns: Annotated[str | None, typer.Option("--keep-columns", metavar="COLUMNS", help="Columns of a .csv input to copy beside the predictions (comma-separated, e.g. id); they are not fed to the model.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", parser=integer(1), metavar="N", help="Batch size.")] = 1024,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Write the model's predictions for --input to --output."""
    from kerspec import predictions as tables
    from kerspec.io.csv import read_csv_columns

    kept_names = [c.strip() for c in keep_columns.split(",") if c.strip()] if keep_columns else []
    with user_errors():
        model = _load(spec, set_, seed=0)
        model.load_weights(weights)
        if kept_names and (input_.suffix.lower(), output.suffix.lower()) != (".csv", ".csv"):
            raise KerspecError("--keep-columns copies columns of a .csv input into a .csv output")
        kept = read_csv_columns(input_, kept_names) if kept_names else {}
        predictions = model.predict(model.read_inputs(input_, exclude=tuple(kept_names)), batch_size=batch_size)
        if output.suffix.lower() == ".csv":
            tables.write_csv(output, model, predictions, kept)
        else:
            from kerspec.io import write_predictions

            write_predictions(output, predictions)
    shapes = {name: list(array.shape) for name, array in predictions.items()}
    if json_out:
        console.emit_json({"output": str(output), "shapes": shapes})
    else:
        console.out.print(f"Wrote {output}: " + ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()), markup=False)


@app.command()
def plot(
    spec: SpecArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="A .dot file, or .svg/.png (needs Graphviz).", show_default=False)],
    set_: SetOpt = None,
) -> None:
    """Draw the model graph: name, type and output shape of every layer."""
    from kerspec.plot import plot as draw

    with user_errors():
        model = _load(spec, set_, seed=0)
        draw(model.graph, output)
    console.out.print(f"Wrote {output}", markup=False)


@app.command()
def diff(
    old: Annotated[str, typer.Argument(metavar="OLD", help="The spec before: a path, or REV:path from git (HEAD~1:specs/m.yaml).", show_default=False)],
    new: Annotated[str, typer.Argument(metavar="NEW", help="The spec after: a path, or REV:path.", show_default=False)],
    json_out: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown, for a pull-request comment.")] = False,
) -> None:
    """What changed in the model from OLD to NEW. Exit 0: the same model; 1: they differ; 2: trouble."""
    from kerspec.diff import diff_specs, render_markdown, render_text

    if json_out and markdown:
        console.err.print("--json and --markdown cannot be combined", markup=False)
        raise typer.Exit(2)
    try:
        found = diff_specs(old, new)
    except Problems as err:  # as GNU diff does, exit 2 for trouble: 1 means "they differ"
        for problem in err.problems:
            console.err.print(str(problem), markup=False)
        raise typer.Exit(2) from None
    if json_out:
        console.emit_json(found.to_json())
    else:
        sys.stdout.write(render_markdown(found) if markdown else render_text(found))
    raise typer.Exit(0 if found.same else 1)


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.", show_default=False)] = None,
    sweep_: Annotated[bool, typer.Option("--sweep", help="The sweep file format's schema instead.")] = False,
) -> None:
    """Print the JSON Schema of the spec format (for editors)."""
    from kerspec.io import write_text
    from kerspec.spec import json_schema
    from kerspec.sweep.schema import sweep_json_schema

    text = json.dumps(sweep_json_schema() if sweep_ else json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        with user_errors():
            write_text(output, text)


OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace output files that exist.")]


@app.command(name="import")
def import_(
    model: Annotated[Path, typer.Argument(help="A Keras model: .keras, .h5 or model.to_json() .json.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The spec to write (.yaml).", show_default=False)],
    weights_out: Annotated[Path | None, typer.Option("--weights-out", help="The weights (.npz); default: the spec's name with .npz.", show_default=False)] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Translate a Keras model into a spec, and its weights into a kerspec .npz."""
    from kerspec.interop.keras_import import import_keras, write_import

    with user_errors():
        imported = import_keras(model)
        written = write_import(imported, output, weights_out, overwrite=overwrite)
    for note in imported.notes:
        console.err.print(f"{model}: {note}", markup=False)
    console.out.print(f"Wrote {', '.join(map(str, written))}", markup=False)


@app.command()
def export(
    spec: SpecArg,
    weights: WeightsOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="MODEL.onnx, or a Keras 3 archive MODEL.keras.", show_default=False)],
    set_: SetOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write the trained model as ONNX (.onnx) or as a Keras 3 archive (.keras)."""
    from kerspec.interop import export_model

    with user_errors():
        model = _load(spec, set_, seed=0)
        model.load_weights(weights)
        export_model(model, output, overwrite=overwrite)
    console.out.print(f"Wrote {output}", markup=False)


@app.command()
def sweep(
    sweep_file: Annotated[Path | None, typer.Argument(metavar="SWEEP", help="The sweep file (YAML).", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Sweep folder (default runs/sweeps/NAME-TIME).", show_default=False)] = None,
    address: Annotated[str | None, typer.Option("--address", help="Join the Ray cluster at HOST:PORT (default: RAY_ADDRESS, else Ray on this machine).", show_default=False)] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Carry on an interrupted sweep folder.", show_default=False)] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a spec over the values a sweep file gives, on Ray Tune; rank the trials."""
    from kerspec.sweep.commands import sweep as run

    if (sweep_file is None) == (resume is None):
        console.err.print("give a sweep file, or --resume a sweep folder (not both)", markup=False)
        raise typer.Exit(2)
    with user_errors():
        run(sweep_file, out=out, address=address, resume=resume, json_out=json_out)


plain_commands(app)
