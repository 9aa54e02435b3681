"""The model a Piper worker's session loads: the voice's ``.onnx`` with its 1-D convolutions
written as 2-D ones, which onnxruntime runs faster.

Input: the path of a voice's model. Output: the path of the model to load (``session_model``).

Piper's voices are VITS models whose decoder is a stack of 1-D convolutions at up to the
audio's own rate: about 70% of a worker's time. onnxruntime's fast convolution kernels (its
blocked NCHWc layout, with the activation fused) take only 4-D tensors, so a 1-D convolution
runs on the generic im2col path. Each convolution over ``[N, C, T]`` becomes the 2-D one over
``[N, C, 1, T]`` with a ``1 x k`` kernel (the same weights, one axis added), and the
activations and sums between them run on the 4-D tensors too, so the layout is reordered only
where a stack begins and ends: the same arithmetic, summed in another order. Measured on the
first 30 cues of back-pain with ``en_US-joe-medium``, one worker, alternated: 13 to 16% less
CPU than the model as it is; the samples differ from the model's own by float rounding (at
most 1.2e-4 of full scale, a few of 32,767 steps, in about 1% of samples).

The rewrite needs the ``onnx`` package (in the ``natural`` extra); without it the model is
loaded as it is. Which of the two a worker does is part of the engine's identity
(``GRAPH_LABEL``), so the speech cache never mixes their cues.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

GRAPH_LABEL = "conv2d"  # the engine's identity: the rewrite below, version 1
PLAIN_LABEL = "onnx"  # the model loaded as it is
# The attributes of each convolution the rewrite knows how to carry to two dimensions; a node
# with any other (auto_pad, output_shape) is left 1-D.
_CONV_ATTRIBUTES = {
    "Conv": frozenset({"kernel_shape", "strides", "dilations", "pads", "group"}),
    "ConvTranspose": frozenset(
        {"kernel_shape", "strides", "dilations", "pads", "group", "output_padding"}
    ),
}
# Nodes the same over [N, C, T] as over [N, C, 1, T] when their other inputs are single numbers.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "LeakyRelu", "Relu", "Tanh", "Sigmoid"})


def available() -> bool:
    """Whether this environment can rewrite a model (the ``onnx`` package is installed)."""
    return importlib.util.find_spec("onnx") is not None


def graph_label(rewrite: bool) -> str:
    return GRAPH_LABEL if rewrite else PLAIN_LABEL


@contextlib.contextmanager
def session_model(model: str, rewrite: bool) -> Iterator[str]:
    """The path of the model a session should load for ``model``: with ``rewrite``, a
    temporary copy with its 1-D convolutions as 2-D (``convs_as_2d``), removed when the block
    ends (the session has read it by then); else ``model`` itself, as when it has no
    convolution to rewrite.

    A file, not bytes: onnxruntime given the model as bytes kept about 60 MB more of it in the
    process, in every worker forked from it. The copy is written by a forked child where there
    is fork, so the onnx package and the parsed model (about 10 MB and 63 MB) never live in
    the fork server, whose pages every worker shares."""
    if not rewrite:
        yield model
        return
    with tempfile.TemporaryDirectory(prefix="audioguide-", ignore_cleanup_errors=True) as tmp:
        path = os.path.join(tmp, "model.onnx")
        yield path if _in_child(_write_rewritten, model, path) else model


def _in_child(work: Callable[[str, str], bool], model: str, path: str) -> bool:
    """``work(model, path)`` in a forked child where there is fork, else here. A failure in
    the child (a model onnx cannot read, say) is raised here as RuntimeError; the session's
    own load of the model then says what is wrong with it."""
    if not hasattr(os, "fork"):
        return work(model, path)
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            code = 0 if work(model, path) else 2
        finally:
            os._exit(code)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code not in (0, 2):
        raise RuntimeError(f"rewriting {model} failed (exit status {code})")
    return code == 0


def _write_rewritten(model: str, path: str) -> bool:
    """Write ``model`` with its convolutions as 2-D to ``path``; False if it has none."""
    import onnx

    proto = onnx.load(model)
    if not convs_as_2d(proto.graph, _default_opset(proto)):
        return False
    onnx.save(proto, path)
    return True


def _default_opset(proto: Any) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)


def convs_as_2d(graph: Any, opset: int) -> int:
    """Rewrite, in ``graph`` (an ``onnx.GraphProto``), every ``Conv`` and ``ConvTranspose``
    over 3-D tensors whose weights are an initializer of its own as the 2-D one over
    ``[N, C, 1, T]``, and every elementwise node between them (``ELEMENTWISE``, its other
    inputs single numbers) as the same node over the 4-D tensors: the decoder's stacks of
    activation, convolution and sum stay 4-D from one end to the other, so onnxruntime
    reorders their layout only where they begin and end. ``Unsqueeze`` on axis 2 makes a
    tensor 4-D where a rewritten node first takes it, and ``Squeeze`` gives its 3-D name back
    wherever another node or the graph's output reads it, so every other node is untouched.
    Returns how many convolutions were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    weights = {tensor.name: tensor for tensor in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    # A weight listed among the graph's inputs (old models) may be fed another shape: left.
    listed = {value.name for value in graph.input} | {value.name for value in graph.output}
    names = set(weights) | {name for node in graph.node for name in (*node.input, *node.output)}
    numbers = {name for name, t in weights.items() if all(d == 1 for d in t.dims)}
    for node in graph.node:
        value = node.attribute[0] if node.op_type == "Constant" and node.attribute else None
        if value is not None and value.name == "value" and all(d == 1 for d in value.t.dims):
            numbers.add(node.output[0])

    def fresh(base: str) -> str:
        name, n = base, 0
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.add(name)
        return name

    def convolution(node: Any) -> bool:
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        return (
            node.op_type in _CONV_ATTRIBUTES
            and node.domain in ("", "ai.onnx")
            and weight is not None
            and len(weight.dims) == 3
            and uses.get(weight.name) == 1
            and weight.name not in listed
            and all(a.name in _CONV_ATTRIBUTES[node.op_type] for a in node.attribute)
        )

    # Which nodes become 4-D, in the graph's order: each tensor they make has a 4-D twin.
    twins: dict[str, str] = {}
    wide: set[int] = set()
    for i, node in enumerate(graph.node):
        if convolution(node):
            pass
        elif node.op_type in ELEMENTWISE and node.domain in ("", "ai.onnx"):
            inputs = [name for name in node.input if name]
            if not any(n in twins for n in inputs) or not all(
                n in twins or n in numbers for n in inputs
            ):
                continue
        else:
            continue
        wide.add(i)
        twins[node.output[0]] = fresh(f"{node.output[0]}_audioguide_4d")
    # Where a tensor with a twin is still read as 3-D.
    flat = {value.name for value in graph.output}
    for i, node in enumerate(graph.node):
        if i not in wide:
            flat.update(name for name in node.input if name in twins)

    axis_inputs: list[str] = []
    axis_attribute: dict[str, Any] = {}
    if opset >= 13:  # axes became an input in opset 13
        axes = fresh("audioguide_axis_2")
        graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes))
        axis_inputs = [axes]
    else:
        axis_attribute = {"axes": [2]}

    rewritten: list[Any] = []
    widened: set[str] = set()

    def four_d(name: str) -> str:
        if name not in twins:
            twins[name] = fresh(f"{name}_audioguide_4d")
            rewritten.append(
                helper.make_node("Unsqueeze", [name, *axis_inputs], [twins[name]], **axis_attribute)
            )
        return twins[name]

    for i, node in enumerate(graph.node):
        if i not in wide:
            rewritten.append(node)
            continue
        output = twins.pop(node.output[0])  # made by this node, not by an Unsqueeze
        if node.op_type in _CONV_ATTRIBUTES:
            weight = weights[node.input[1]]
            weight.dims.insert(2, 1)  # [out, in / group, k] -> [out, in / group, 1, k]
            widened.add(weight.name)
            attributes: dict[str, Any] = {}
            for attribute in node.attribute:
                values = list(attribute.ints)
                if attribute.name == "group":
                    attributes["group"] = attribute.i
                elif attribute.name == "pads":  # [begin, end] -> [top, begin, bottom, end]
                    attributes["pads"] = [0, values[0], 0, values[1]]
                elif attribute.name == "output_padding":
                    attributes["output_padding"] = [0, *values]
                else:  # kernel_shape, strides, dilations
                    attributes[attribute.name] = [1, *values]
            inputs = [four_d(node.input[0]), *node.input[1:]]
            made = helper.make_node(node.op_type, inputs, [output], name=node.name, **attributes)
        else:
            made = type(node)()
            made.CopyFrom(node)
            del made.input[:]
            made.input.extend(four_d(n) if n and n not in numbers else n for n in node.input)
            made.output[0] = output
        rewritten.append(made)
        twins[node.output[0]] = output
        if node.output[0] in flat:
            rewritten.append(
                helper.make_node(
                    "Squeeze", [output, *axis_inputs], [node.output[0]], **axis_attribute
                )
            )
    del graph.node[:]
    graph.node.extend(rewritten)
    # A shape recorded for a widened weight, or for a tensor now only 4-D, would contradict it.
    present = {name for node in graph.node for name in (*node.input, *node.output)}
    for value in [v for v in graph.value_info if v.name in widened or v.name not in present]:
        graph.value_info.remove(value)
    return len(widened)
