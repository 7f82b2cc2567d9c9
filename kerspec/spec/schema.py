"""The spec format as pydantic models: what `kerspec validate` checks and `kerspec schema` prints."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    NonNegativeInt,
    PlainValidator,
    PositiveInt,
    Tag,
)
from pydantic_core import PydanticCustomError

from kerspec.layers import LAYERS
from kerspec.paths import Name
from kerspec.registry import Item, Registry, SchemaOnly
from kerspec.spec.data import DataEntry
from kerspec.training.callbacks import CALLBACKS
from kerspec.training.losses import LOSSES
from kerspec.training.metrics import METRICS
from kerspec.training.optimizers import OPTIMIZERS


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, validate_default=True, defer_build=True
    )


class Shared(Section):
    """Applies an existing layer, with the same weights, to another input."""

    name: Name | None = None
    share: str = Field(description="The name of the layer whose weights are reused.")
    from_: str | list[str] | None = Field(None, alias="from")


def _layer_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return "share" if "share" in value else value.get("type")
    return "share" if isinstance(value, Shared) else getattr(value, "type", None)


def _normalize_layer(value: Any) -> Any:
    if not isinstance(value, dict):
        raise PydanticCustomError("layer_entry", "a layer entry must be a mapping with a 'type'")
    if "share" in value:
        return value
    if "type" not in value:
        raise PydanticCustomError(
            "layer_type", "a layer entry needs a 'type' (or 'share' to reuse a layer)"
        )
    if not isinstance(value["type"], str):
        raise PydanticCustomError(
            "layer_type",
            "'type' must be a layer class name such as 'Dense' (received {received})",
            {"received": repr(value["type"])[:60]},
        )
    return LAYERS.normalize(value)


def _validate_layer(value: Any) -> Any:
    """A layer entry validated by its own class only: validating a spec builds the schemas of the
    layer types it uses, not of all of them (most of a second, for `validate` and `summary`)."""
    if isinstance(value, Item):
        return value
    value = _normalize_layer(value)
    return (Shared if "share" in value else LAYERS.get(value["type"])).model_validate(value)


def _every_layer():
    """A layer entry's type for its JSON Schema: every layer class, or a shared layer."""
    variants = [Annotated[cls, Tag(name)] for name, cls in zip(LAYERS.names(), _classes(LAYERS))]
    variants.append(Annotated[Shared, Tag("share")])
    return Annotated[Union[tuple(variants)], Discriminator(_layer_tag)]  # noqa: UP007


def _classes(registry: Registry):
    return [registry.get(name) for name in registry.names()]


def _single_or_per_output(registry: Registry, many: bool):
    """A catalog entry (or list) for every output, or a mapping from output name to one."""
    ref = registry.ref()
    one = list[ref] if many else ref

    def tag(value: Any) -> str:
        if isinstance(value, dict) and "type" not in value:
            return "per_output"
        return "shared"

    return Annotated[
        Union[Annotated[one, Tag("shared")], Annotated[dict[str, one], Tag("per_output")]],  # noqa: UP007
        Discriminator(tag),
    ]


def _by_kind(value: Any) -> str:
    return "per_output" if isinstance(value, dict) else "in_order"


# One weight per output, in order or by name; tagged so that a bad weight is one message.
LossWeights = Annotated[
    Union[Annotated[list[FiniteFloat], Tag("in_order")], Annotated[dict[str, FiniteFloat], Tag("per_output")]],  # noqa: UP007
    Discriminator(_by_kind),
]


class Compile(Section):
    optimizer: OPTIMIZERS.ref() = "rmsprop"
    loss: _single_or_per_output(LOSSES, many=False) | None = None
    loss_weights: LossWeights | None = None
    metrics: _single_or_per_output(METRICS, many=True) = []


def _class_index(value: Any) -> Any:
    """YAML keys `0:` are ints already; accept `"0":` too, as JSON would write them."""
    if isinstance(value, dict):
        return {
            int(k) if isinstance(k, str) and k.strip().isdigit() else k: v for k, v in value.items()
        }
    return value


class Fit(Section):
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    shuffle: bool = True
    validation_split: float = Field(0.0, ge=0.0, lt=1.0)
    initial_epoch: NonNegativeInt = Field(
        0, description="Epoch at which to start training (the first is 0), as Keras's."
    )
    class_weight: Annotated[
        dict[NonNegativeInt, Annotated[float, Field(ge=0.0)]] | None, BeforeValidator(_class_index)
    ] = Field(
        None,
        description="Class index -> loss weight for the training samples of that class "
        "(one-output models; the target's argmax for one-hot targets).",
    )
    callbacks: list[CALLBACKS.ref()] = Field(
        [], description="Keras callbacks by class name with their Keras arguments."
    )


class Data(Section):
    train: DataEntry | None = None
    validation: DataEntry | None = None
    test: DataEntry | None = None


LayerEntry = Annotated[Any, PlainValidator(_validate_layer), SchemaOnly(_every_layer)]
Names = Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)]


class Spec(Section):
    """A kerspec model file."""

    model_config = ConfigDict(title="kerspec model spec")

    kerspec: Literal[1] = Field(1, description="Spec format version.")
    name: Name | None = Field(
        None, description="Model name, and its run folder's (runs/NAME-TIME); defaults to the file's stem."
    )
    description: str | None = None
    seed: NonNegativeInt | None = Field(
        None, lt=2**128, description="Every random draw follows from it; a fresh seed when left out."
    )
    dtype: Literal["float32", "float64"] = "float32"
    layers: list[LayerEntry] = Field(min_length=1)
    inputs: Names | None = Field(None, description="Model inputs; default: every Input layer.")
    outputs: Names | None = Field(None, description="Model outputs; default: the last layer.")
    compile: Compile | None = None
    data: Data | None = None
    # Fit's defaults, without building Fit's validator (and every callback's) at import.
    fit: Fit = Fit.model_construct()


def json_schema() -> dict[str, Any]:
    Fit.model_rebuild()  # the schema shows `fit`'s default through Fit's own serializer
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
