"""Lambda: a hostile corpus refused at validation, gradients of every operation, shapes, Keras."""

import numpy as np
import pytest
from pydantic import ValidationError

import kerspec
from kerspec.errors import SpecError
from kerspec.expression import FUNCTIONS
from kerspec.expression.parse import _parse_cached
from kerspec.layers import Context, ShapeError
from kerspec.spec import parse_spec
from tests.harness import build, check_layer_grads, compare_with_keras


def lam(expression: str, **kwargs) -> dict:
    return {"type": "Lambda", "expression": expression, **kwargs}


def positive(*shapes):
    """Inputs in [0.5, 2): away from the poles and kinks of log, sqrt, 1/x and x ** 0.5."""
    rng = np.random.default_rng(1)
    return [rng.uniform(0.5, 2.0, s) for s in shapes]


# ---------------------------------------------------------------------------------------------
# The whitelist: every case is refused while the spec is validated, with a message naming it.

HOSTILE = [
    ("x.__class__", "attribute access `x.__class__`"),
    ("x.__dict__", "attribute access"),
    ("__import__('os')", "`__import__` is not allowed"),
    ("__import__('os').system('ls')", "attribute access"),
    ("__builtins__", "`__builtins__` is not allowed"),
    ("().__class__.__bases__", "attribute access"),
    ("open('f')", "unknown function `open`"),
    ("eval('1')", "unknown function `eval`"),
    ("exec('x')", "unknown function `exec`"),
    ("getattr(x, 'T')", "unknown function `getattr`"),
    ("globals()", "unknown function `globals`"),
    ("type(x)", "unknown function `type`"),
    ("[i for i in x]", "comprehensions are not allowed"),
    ("exp(i for i in x)", "comprehensions are not allowed"),
    ("{k: x for k in x}", "comprehensions are not allowed"),
    ("lambda: 1", "lambda is not allowed"),
    ("(lambda: x)()", "cannot be called"),
    ("x ** 10**10", "exponent must be a number known in advance"),
    ("x ** x", "exponent must be a number known in advance"),
    ("x ** y", "exponent must be a number known in advance"),
    ("x ** 17", "exponent 17 is too large"),
    ("x ** -100", "too large"),
    ("(" * 200 + "x" + ")" * 200, "nested more than 100 levels"),
    ("-" * 150 + "x", "nested more than 100 levels"),
    ("x" + " + x" * 1250, "characters long; the limit is 2000"),
    ("'abc'", "strings are not allowed"),
    ("x * 'a'", "strings are not allowed"),
    ("f'{x}'", "f-strings are not allowed"),
    ("(y := x)", "assignment (:=) is not allowed"),
    ("x if x else x", "conditional expressions"),
    ("x and x", "boolean operators"),
    ("x or 1", "boolean operators"),
    ("x < 1", "comparisons are not allowed"),
    ("x == x", "comparisons are not allowed"),
    ("np.exp(x)", "attribute access `np.exp`"),
    ("x.T", "attribute access `x.T`"),
    ("foo(x)", "unknown function `foo`"),
    ("x()", "unknown function `x`"),
    ("y", "unknown name `y`"),
    ("x + z1", "unknown name `z1`"),
    ("exp", "`exp` is a function"),
    ("sum(x, axis=1, out=x)", "keyword argument `out=` is not allowed"),
    ("reshape(x, shape=(2,))", "keyword argument `shape=` is not allowed"),
    ("exp(x, axis=1)", "exp takes no keyword argument `axis=`"),
    ("sum(x, axis=x)", "`axis` must be a literal integer"),
    ("sum(x, axis=(1, x))", "`axis` must be a literal integer"),
    ("sum(x, 1, keepdims=1)", "`keepdims` must be True or False"),
    ("sum(x)", "needs its argument `axis`"),
    ("sum(x, axis=0)", "axis 0 is the batch axis"),
    ("concatenate([x, x], axis=0)", "axis 0 is the batch axis"),
    ("transpose(x, axes=x)", "must be a literal tuple"),
    ("reshape(x, (0, 2))", "positive sizes and at most one -1"),
    ("clip(x, x, 1)", "lower bound must be a number known in advance"),
    ("clip(x, 1, 0)", "bounds are reversed"),
    ("exp(x, x)", "at most 1 positional"),
    ("exp(*x)", "starred (*) arguments are not allowed"),
    ("sum(x, **{'axis': 1})", "`**` arguments are not allowed"),
    ("x[0]", "would slice the batch axis"),
    ("x[1:, 0]", "would slice the batch axis"),
    ("x[::2]", "would slice the batch axis"),
    ("x[x]", "cannot index an array"),
    ("x[:, x]", "cannot index an array"),
    ("x[:, [0, 1]]", "cannot index an array"),
    ("x[:, 'a']", "cannot index an array"),
    ("x[:, None]", "`None` (a new axis) is not allowed"),
    ("x[..., ...]", "at most one `...`"),
    ("x[:, 0:3:0]", "step cannot be zero"),
    ("pi[0]", "only arrays can be sliced"),
    ("not x", "operator `not` is not allowed"),
    ("~x", "operator `~` is not allowed"),
    ("x // 2", "operator `//` is not allowed"),
    ("x % 2", "operator `%` is not allowed"),
    ("x ^ 1", "operator `^` is not allowed"),
    ("x << 1", "operator `<<` is not allowed"),
    ("{1: x}", "dicts are not allowed"),
    ("{x}", "sets are not allowed"),
    ("[x, x]", "only allowed as concatenate's first argument"),
    ("x * True", "`True` is not allowed"),
    ("None", "`None` is not allowed"),
    ("1j * x", "only real numbers"),
    ("x * 1e400", "too large for float32"),
    ("1 + 2", "must use its input"),
    ("x + x0", "both `x` and numbered inputs"),
    ("x; import os", "not a valid expression"),
    ("import os", "not a valid expression"),
    ("x\n__import__('os')", "not a valid expression"),
    ("x +", "not a valid expression"),
    ("", "is empty"),
    ("x @ 2", "`@` needs arrays on both sides"),
    ("reshape(2, (1,))", "reshape needs an array, not a constant"),
]


@pytest.mark.parametrize("expression,message", HOSTILE, ids=lambda v: repr(v)[:40])
def test_hostile_expressions_are_refused(expression, message):
    with pytest.raises(ValidationError) as err:
        build(lam(expression))
    (error,) = err.value.errors()
    assert message in error["msg"], error["msg"]


def test_hostile_corpus_is_large():
    assert len(HOSTILE) >= 40


def test_refusal_names_the_column():
    with pytest.raises(ValidationError, match=r"`__import__` is not allowed \(column 9\)"):
        build(lam("x * 2 + __import__('os')"))


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"function": "lambda x: x"}, "`function` is not supported"),
        ({"mask": "lambda x, m: m"}, "`mask` is not supported"),
        ({"arguments": {"x1": 2.0}}, "cannot name a constant"),
        ({"arguments": {"__class__": 2.0}}, "cannot name a constant"),
        ({"arguments": {"exp": 2.0}}, "cannot name a constant"),
        ({"arguments": {"scale": "os.system"}}, "valid number"),
        ({"arguments": {"scale": {"a": 1}}}, "valid number"),
        ({"dtype": "float32"}, "Extra inputs are not permitted"),
    ],
)
def test_code_like_arguments_are_refused(extra, message):
    with pytest.raises(ValidationError) as err:
        build(lam("x * 2", **extra))
    assert message in str(err.value)


def test_never_calls_eval(monkeypatch):
    """eval and exec are never called, and compile only to parse (ast.parse's PyCF_ONLY_AST)."""
    import ast
    import builtins

    real_compile = builtins.compile
    seen = []

    def forbidden(*args, **kwargs):
        seen.append(args)
        raise AssertionError("eval/exec must not be called")

    def parse_only(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & ast.PyCF_ONLY_AST:
            seen.append(source)
            raise AssertionError("compile may only parse")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", parse_only)
    _parse_cached.cache_clear()  # parse again, under the patches
    layer = build(lam("tanh(x[:, 1:3]) * 2 + 1"))
    (y,), _ = layer.forward(
        {}, [np.ones((2, 4), np.float32)], Context(False, np.random.default_rng(0))
    )
    monkeypatch.undo()
    assert not seen
    np.testing.assert_allclose(y, np.tanh(1.0) * 2 + 1, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gradients: every operator and function, slicing, reductions, concatenate and matmul.

GRAD_CASES = [
    # operators, with constants on either side
    (lam("x + 1"), [(3, 4)], None),
    (lam("x - 2.5"), [(3, 4)], None),
    (lam("2 - x"), [(3, 4)], None),
    (lam("x * 3 * pi"), [(3, 4)], None),
    (lam("x / 4 + e"), [(3, 4)], None),
    (lam("3 / x"), [(3, 4)], positive((3, 4))),
    (lam("-x"), [(3, 4)], None),
    (lam("+x * 2"), [(3, 4)], None),
    (lam("x ** 2"), [(3, 4)], None),
    (lam("x ** 3"), [(3, 4)], None),
    (lam("x ** 0"), [(3, 4)], None),
    (lam("x ** -1"), [(3, 4)], positive((3, 4))),
    (lam("x ** 0.5"), [(3, 4)], positive((3, 4))),
    (lam("x ** (1 / 3)"), [(3, 4)], positive((3, 4))),
    (lam("x ** scale", arguments={"scale": 1.5}), [(3, 4)], positive((3, 4))),
    (lam("x * scale + shift", arguments={"scale": 2, "shift": -0.5}), [(3, 4)], None),
    # functions
    (lam("abs(x)"), [(3, 4)], None),
    (lam("exp(x)"), [(3, 4)], None),
    (lam("log(x)"), [(3, 4)], positive((3, 4))),
    (lam("sqrt(x)"), [(3, 4)], positive((3, 4))),
    (lam("square(x)"), [(3, 4)], None),
    (lam("tanh(x)"), [(3, 4)], None),
    (lam("sigmoid(x * 3)"), [(3, 4)], None),
    (lam("relu(x)"), [(3, 4)], None),
    (lam("softplus(x * 3)"), [(3, 4)], None),
    (lam("sin(x)"), [(3, 4)], None),
    (lam("cos(x)"), [(3, 4)], None),
    (lam("maximum(x, 0.1)"), [(3, 4)], None),
    (lam("minimum(-0.2, x)"), [(3, 4)], None),
    (lam("clip(x, -0.5, 0.5)"), [(3, 4)], None),
    (lam("clip(x * 2, -pi / 4, 1)"), [(3, 4)], None),
    # reductions
    (lam("sum(x, axis=1)"), [(3, 4)], None),
    (lam("sum(x, 1, keepdims=True) * x"), [(3, 4)], None),
    (lam("mean(x, axis=(1, 2))"), [(2, 3, 4)], None),
    (lam("mean(x, axis=-1, keepdims=True)"), [(2, 3, 4)], None),
    (lam("max(x, axis=1)"), [(3, 5)], None),
    (lam("max(x, axis=(1, -1), keepdims=True)"), [(2, 3, 4)], None),
    (lam("min(x, axis=2)"), [(2, 3, 4)], None),
    (lam("x - mean(x, axis=-1, keepdims=True)"), [(2, 3, 4)], None),
    (lam("exp(x) / sum(exp(x), axis=1, keepdims=True)"), [(3, 5)], None),
    # shapes
    (lam("reshape(x, (3, -1))"), [(2, 6)], None),
    (lam("reshape(x, [4, 3]) * 2"), [(2, 3, 4)], None),
    (lam("transpose(x, (2, 1))"), [(2, 3, 4)], None),
    (lam("transpose(x, axes=(0, 3, 1, 2))"), [(2, 3, 4, 2)], None),
    (lam("expand_dims(x, 1) * 2"), [(2, 3)], None),
    (lam("expand_dims(x, -1)"), [(2, 3)], None),
    (lam("squeeze(x, 2)"), [(2, 3, 1)], None),
    (lam("concatenate([x, x * 2], axis=1)"), [(2, 3)], None),
    (lam("concatenate([x0, x1, x0])"), [(2, 3, 2), (2, 3, 1)], None),
    (lam("concatenate((x0, x1), axis=1)"), [(2, 3, 2), (2, 1, 2)], None),
    # slicing
    (lam("x[:, 1:3]"), [(2, 5)], None),
    (lam("x[..., 0]"), [(2, 3, 4)], None),
    (lam("x[:, ::2]"), [(2, 5)], None),
    (lam("x[:, -1]"), [(2, 5)], None),
    (lam("x[:, 1:-1, 0]"), [(2, 4, 3)], None),
    (lam("x[..., ::-1] * x"), [(2, 3, 4)], None),
    (lam("x[:, 1:, ...]"), [(2, 3, 4)], None),
    (lam("x[:, :2] * x[:, 1:3] + x[:, 0:1]"), [(2, 5)], None),
    # matmul
    (lam("x0 @ x1"), [(2, 3, 4), (2, 4, 5)], None),
    (lam("x @ transpose(x, (2, 1))"), [(2, 3, 4)], None),
    (lam("x0 @ x1"), [(2, 1, 3, 4), (2, 5, 4, 2)], None),
    # two inputs, broadcasting and reuse
    (lam("x0 * x1 + x0"), [(2, 3), (2, 3)], None),
    (lam("x0 / x1"), [(2, 3), (2, 3)], positive((2, 3), (2, 3))),
    (lam("x0 * x1"), [(2, 3, 1), (2, 1, 4)], None),
    (lam("x0 - x1"), [(2, 3, 4), (2, 3, 1)], None),
    (lam("maximum(x0, x1) + minimum(x0, x1 * 2)"), [(2, 3), (2, 3)], None),
    (lam("x1 * 2"), [(2, 3), (2, 3)], None),
    # one dy reaching two activations, whose backward may overwrite it
    (lam("tanh(x0) + exp(x1)"), [(2, 3), (2, 3)], None),
    (lam("sigmoid(x) - relu(x) + softplus(x)"), [(3, 4)], None),
]


@pytest.mark.parametrize(
    "config,shapes,inputs", GRAD_CASES, ids=[c[0]["expression"] for c in GRAD_CASES]
)
def test_gradients(config, shapes, inputs):
    check_layer_grads(config, shapes, inputs=inputs)


def test_every_function_and_operator_has_a_gradient_case():
    expressions = " ".join(config["expression"] for config, _, _ in GRAD_CASES)
    missing = [f for f in FUNCTIONS if f"{f}(" not in expressions]
    missing += [
        op for op in (" + ", " - ", " * ", " / ", " ** ", " @ ", "-x", "[") if op not in expressions
    ]
    assert not missing


def test_functions_that_are_activations_take_the_activations_formulas():
    """One home per formula: a function named like an activation is served by the catalog."""
    from kerspec.activations import ACTIVATIONS
    from kerspec.expression.grad import ACTIVATIONS_BY_FUNCTION, ELEMENTWISE
    from kerspec.expression.tree import UNARY_FUNCTIONS

    assert not set(ACTIVATIONS_BY_FUNCTION) & set(ELEMENTWISE)
    assert set(UNARY_FUNCTIONS) <= set(ACTIVATIONS_BY_FUNCTION) | set(ELEMENTWISE)
    assert set(UNARY_FUNCTIONS) & set(ACTIVATIONS.names()) <= set(ACTIVATIONS_BY_FUNCTION)
    for name in ACTIVATIONS_BY_FUNCTION.values():
        ACTIVATIONS.get(name)


def test_unused_input_gets_a_zero_gradient():
    layer = build(lam("x1 * 2"))
    xs = [np.ones((2, 3), np.float32), np.ones((2, 3), np.float32)]
    (y,), backprop = layer.forward({}, xs, Context(True, np.random.default_rng(0)))
    dxs, dws = backprop([np.ones_like(y)])
    assert dws == {}
    np.testing.assert_array_equal(dxs[0], 0)
    np.testing.assert_array_equal(dxs[1], 2)


def test_max_shares_the_gradient_among_ties():
    layer = build(lam("max(x, axis=1)"))
    x = np.array([[1.0, 3.0, 3.0]], np.float32)
    (y,), backprop = layer.forward({}, [x], Context(True, np.random.default_rng(0)))
    (dx,), _ = backprop([np.ones_like(y)])
    np.testing.assert_allclose(dx, [[0, 0.5, 0.5]])


# ---------------------------------------------------------------------------------------------
# Shapes: inferred statically, checked against output_shape, float32 kept.


@pytest.mark.parametrize(
    "expression,shapes,expected",
    [
        ("x * 2 + 1", [(None, 3)], (None, 3)),
        ("x[:, 1:3]", [(5,)], (2,)),
        ("x[:, 1:3]", [(None,)], (None,)),
        ("x[..., 0]", [(4, 3)], (4,)),
        ("x[:, ::2]", [(5,)], (3,)),
        ("x[:, -1]", [(5, 2)], (2,)),
        ("sum(x, axis=-1)", [(None, 4)], (None,)),
        ("mean(x, axis=(1, 2), keepdims=True)", [(3, 4)], (1, 1)),
        ("reshape(x, (2, -1))", [(3, 4)], (2, 6)),
        ("reshape(x, (2, -1))", [(None, 4)], (2, None)),
        ("transpose(x, (2, 1))", [(3, 4)], (4, 3)),
        ("expand_dims(x, -1)", [(3,)], (3, 1)),
        ("squeeze(x, 1)", [(1, 3)], (3,)),
        ("concatenate([x0, x1], axis=1)", [(2, 3), (4, 3)], (6, 3)),
        ("concatenate([x0, x1])", [(None, 3), (None, 2)], (None, 5)),
        ("x0 @ x1", [(3, 4), (4, 5)], (3, 5)),
        ("x0 @ x1", [(None, 4), (4, None)], (None, None)),
        ("x0 + x1", [(None, 3), (5, 1)], (5, 3)),
        ("maximum(x0, x1)", [(3, 1), (1, 4)], (3, 4)),
    ],
)
def test_output_shapes(expression, shapes, expected):
    assert build(lam(expression)).output_shapes(shapes) == [expected]


@pytest.mark.parametrize(
    "expression,shapes,message",
    [
        ("x0 + x1", [(3,), (4,)], "`x0 + x1`: shapes (None, 3) and (None, 4) do not broadcast"),
        ("x0 + x1", [(3,), (2, 3)], "different ranks"),
        ("x0 @ x1", [(3, 4), (5, 2)], "`@` needs the last axis"),
        ("x0 @ x1", [(3,), (3,)], "at least (batch, rows, columns)"),
        ("x[:, 5:9]", [(4,)], "selects nothing"),
        ("x[:, 7]", [(4,)], "index 7 is out of range"),
        ("x[:, 0, 0]", [(4,)], "3 indices for an array of rank 2"),
        ("x[..., 0]", [()], "batch axis would be indexed"),
        ("sum(x, axis=3)", [(4, 2)], "axis 3 is out of range"),
        ("sum(x, axis=-3)", [(4, 2)], "axis 0 is the batch axis"),
        ("sum(x, axis=(1, -2))", [(4, 2)], "repeated"),
        ("reshape(x, (5,))", [(4,)], "cannot reshape"),
        ("reshape(x, (3, -1))", [(4,)], "cannot reshape"),
        ("transpose(x, (1, 3))", [(4, 2)], "axes must order the non-batch axes"),
        ("squeeze(x, 1)", [(4, 2)], "not 1"),
        ("concatenate([x0, x1])", [(4, 2), (3, 2)], "must match on every axis"),
        ("concatenate([x0, x1])", [(4, 2), (4,)], "same rank"),
    ],
)
def test_shape_errors(expression, shapes, message):
    layer = build(lam(expression))
    with pytest.raises(ShapeError) as err:
        layer.output_shapes(shapes)
    assert message in str(err.value)


def test_output_shape_is_checked_and_fills_unknown_dims():
    assert build(lam("x * 2", output_shape=[None, 3])).output_shapes([(None, 3)]) == [(None, 3)]
    assert build(lam("x * 2", output_shape=[4, 3])).output_shapes([(None, 3)]) == [(4, 3)]
    with pytest.raises(ShapeError, match=r"output_shape \(None, 4\) does not match .* \(None, 3\)"):
        build(lam("x * 2", output_shape=[4])).output_shapes([(3,)])
    with pytest.raises(ShapeError, match="does not match"):
        build(lam("x * 2", output_shape=[3])).output_shapes([(2, 3)])


def test_output_shape_is_checked_at_run_time_for_unknown_dims():
    layer = build(lam("x * 2", output_shape=[5]))
    assert layer.output_shapes([(None,)]) == [(5,)]
    with pytest.raises(ShapeError, match="output_shape"):
        layer.forward({}, [np.ones((2, 4), np.float32)], Context(False, np.random.default_rng(0)))


def test_arity_follows_the_names_used():
    assert build(lam("x * 2")).arity == 1
    assert build(lam("x0 * 2")).arity == 1
    assert build(lam("x0 + x2")).arity == 3
    with pytest.raises(ShapeError, match="uses 2 input"):
        build(lam("x0 + x1")).output_shapes([(3,)])


@pytest.mark.parametrize(
    "expression",
    [
        "x * 2.5 + pi",
        "x / 3",
        "sigmoid(x) * e",
        "mean(x, axis=1)",
        "x ** 2",
        "clip(x, -0.1, 0.2)",
        "softplus(x)",
        "concatenate([x, x * 0.5])",
    ],
)
def test_float32_is_kept(expression):
    layer = build(lam(expression))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    (y,), backprop = layer.forward({}, [x], Context(True, np.random.default_rng(0)))
    (dx,), _ = backprop([np.ones_like(y)])
    assert y.dtype == np.float32 and dx.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Keras: the same function written with keras.ops gives the same outputs and input gradients.

KERAS_CASES = [
    ("tanh(x) * 2 + 1", lambda k: lambda x: k.ops.tanh(x) * 2 + 1, [(3, 4)]),
    (
        "sigmoid(x[:, 1:3]) - x[:, :2] ** 2",
        lambda k: lambda x: k.ops.sigmoid(x[:, 1:3]) - x[:, :2] ** 2,
        [(3, 4)],
    ),
    (
        "mean(exp(x), axis=-1, keepdims=True) * x",
        lambda k: lambda x: k.ops.mean(k.ops.exp(x), axis=-1, keepdims=True) * x,
        [(2, 3, 4)],
    ),
    ("x0 @ x1 + 1", lambda k: lambda xs: k.ops.matmul(xs[0], xs[1]) + 1, [(2, 3, 4), (2, 4, 2)]),
    (
        "concatenate([relu(x0), softplus(x1)], axis=1)",
        lambda k: lambda xs: k.ops.concatenate([k.ops.relu(xs[0]), k.ops.softplus(xs[1])], axis=1),
        [(2, 3), (2, 2)],
    ),
    (
        "reshape(transpose(x, (2, 1)), (-1,))",
        lambda k: lambda x: k.ops.reshape(k.ops.transpose(x, (0, 2, 1)), (x.shape[0], -1)),
        [(2, 3, 4)],
    ),
    (
        "max(x, axis=1) + clip(sum(x, axis=1), -1, 1)",
        lambda k: lambda x: k.ops.max(x, axis=1) + k.ops.clip(k.ops.sum(x, axis=1), -1, 1),
        [(3, 5)],
    ),
]


@pytest.mark.parametrize("expression,make,shapes", KERAS_CASES, ids=[c[0] for c in KERAS_CASES])
def test_matches_keras(expression, make, shapes):
    keras = pytest.importorskip("keras")
    compare_with_keras(lam(expression), keras.layers.Lambda(make(keras)), shapes)


# ---------------------------------------------------------------------------------------------
# Whole specs: a Lambda model trains; a hostile expression is reported at its line.

SPEC = """\
kerspec: 1
seed: 0
layers:
  - {type: Input, shape: [6], name: a}
  - {type: Input, shape: [6], name: b}
  - {type: Dense, units: 4, activation: tanh, from: a, name: da}
  - {type: Dense, units: 4, from: b, name: db}
  - name: mix
    type: Lambda
    from: [da, db]
    expression: "concatenate([x0 * sigmoid(x1), square(x0 - x1)]) / 2"
    output_shape: [8]
  - {type: Dense, units: 2}
compile: {optimizer: adam, loss: mse}
data:
  train: {source: random, samples: 64, seed: 1}
fit: {epochs: 3, batch_size: 16}
"""


def test_a_spec_with_lambda_trains():
    model = kerspec.from_yaml(SPEC, seed=0)
    history = model.fit()
    losses = history["loss"] if isinstance(history, dict) else history.history["loss"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_hostile_expression_is_reported_at_its_line():
    text = SPEC.replace('"concatenate([x0 * sigmoid(x1), square(x0 - x1)]) / 2"', '"x0.__class__"')
    with pytest.raises(SpecError) as err:
        parse_spec(text, "model.yaml")
    message = str(err.value)
    assert message.startswith("model.yaml:11:")
    assert (
        "Lambda 'mix': expression: attribute access `x0.__class__` is not allowed (column 1)"
        in message
    )


def test_shape_error_is_reported_for_the_entry():
    text = SPEC.replace("square(x0 - x1)", "x0[:, :2]").replace(
        "output_shape: [8]", "output_shape: [9]"
    )
    with pytest.raises(kerspec.KerspecError, match=r"<spec>:8:\d+: Lambda 'mix': output_shape"):
        kerspec.from_yaml(text)


def test_from_must_name_as_many_inputs_as_the_expression_uses():
    text = SPEC.replace("from: [da, db]", "from: da")
    with pytest.raises(
        kerspec.KerspecError, match=r"Lambda 'mix': takes 2 input\(s\); 'from' names 1"
    ):
        kerspec.from_yaml(text)


def test_unknown_dimensions_that_do_not_fit_at_run_time_are_shape_errors():
    layer = build(lam("reshape(x, (4, -1))"))
    assert layer.output_shapes([(None,)]) == [(4, None)]
    with pytest.raises(
        ShapeError, match=r"`reshape\(x, \(4, -1\)\)` fails on inputs of shape \(None, 6\)"
    ):
        layer.forward({}, [np.ones((2, 6), np.float32)], Context(False, np.random.default_rng(0)))


def test_syntax_warnings_are_not_printed(recwarn):
    with pytest.raises(ValidationError, match="unknown function"):
        build(lam("x * foo(1)"))
    with pytest.raises(ValidationError):
        build(lam("1(x)"))
    assert not [w for w in recwarn if issubclass(w.category, SyntaxWarning)]
