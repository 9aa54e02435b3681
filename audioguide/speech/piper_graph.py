"""The model a Piper worker's session loads: the voice's ``.onnx`` with its 1-D convolutions
written as 2-D ones, which onnxruntime runs faster.

Input: the path of a voice's model. Output: the path of the model to load (``session_model``).

Piper's voices are VITS models whose decoder is a stack of 1-D convolutions at up to the
audio's own rate: about 70% of a worker's time. onnxruntime's fast convolution kernels (its
blocked NCHWc layout, with the activation fused) take only 4-D tensors, so a 1-D convolution
runs on the generic im2col path. Each ``Conv`` over ``[N, C, T]`` becomes ``Unsqueeze`` to
``[N, C, 1, T]``, a ``Conv`` whose kernel is ``1 x k`` (the same weights, one axis added),
and ``Squeeze`` back: the same arithmetic, summed in another order. Measured on the whole
back-pain text with ``en_US-joe-medium``: 10 to 12% less CPU per cue; the samples differ from
the model's own by float rounding (at most 1.2e-4 of full scale, a few of 32,767 steps, in
about 1% of samples).

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
# A Conv's attributes the rewrite knows how to carry to two dimensions; a node with any other
# (auto_pad, say) is left 1-D.
_CONV_ATTRIBUTES = frozenset({"kernel_shape", "strides", "dilations", "pads", "group"})


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
    """Rewrite, in ``graph`` (an ``onnx.GraphProto``), every ``Conv`` over 3-D tensors whose
    weights are an initializer of its own as ``Unsqueeze`` -> 2-D ``Conv`` -> ``Squeeze``
    on axis 2. Returns how many were rewritten. Tensor names outside the rewritten nodes are
    kept, so every other node and the graph's outputs are untouched."""
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

    def fresh(base: str) -> str:
        name, n = base, 0
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.add(name)
        return name

    axis_inputs: list[str] = []
    axis_attribute: dict[str, Any] = {}
    if opset >= 13:  # axes became an input in opset 13
        axes = fresh("audioguide_axis_2")
        graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axes))
        axis_inputs = [axes]
    else:
        axis_attribute = {"axes": [2]}

    rewritten = []
    widened: set[str] = set()
    for node in graph.node:
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        if (
            node.op_type != "Conv"
            or node.domain not in ("", "ai.onnx")
            or weight is None
            or len(weight.dims) != 3
            or uses.get(weight.name) != 1
            or weight.name in listed
            or any(a.name not in _CONV_ATTRIBUTES for a in node.attribute)
        ):
            rewritten.append(node)
            continue
        weight.dims.insert(2, 1)  # [out, in / group, k] -> [out, in / group, 1, k]: same data
        widened.add(weight.name)
        attributes: dict[str, Any] = {}
        for attribute in node.attribute:
            values = list(attribute.ints)
            if attribute.name == "group":
                attributes["group"] = attribute.i
            elif attribute.name == "pads":  # [begin, end] -> [top, begin, bottom, end]
                attributes["pads"] = [0, values[0], 0, values[1]]
            else:  # kernel_shape, strides, dilations
                attributes[attribute.name] = [1, *values]
        wide_in = fresh(f"{node.output[0]}_audioguide_4d_in")
        wide_out = fresh(f"{node.output[0]}_audioguide_4d_out")
        rewritten.append(
            helper.make_node(
                "Unsqueeze", [node.input[0], *axis_inputs], [wide_in], **axis_attribute
            )
        )
        rewritten.append(
            helper.make_node(
                "Conv", [wide_in, *node.input[1:]], [wide_out], name=node.name, **attributes
            )
        )
        rewritten.append(
            helper.make_node(
                "Squeeze", [wide_out, *axis_inputs], [node.output[0]], **axis_attribute
            )
        )
    del graph.node[:]
    graph.node.extend(rewritten)
    # A 3-D shape recorded for a rewritten weight would contradict its new one.
    for value in [v for v in graph.value_info if v.name in widened]:
        graph.value_info.remove(value)
    return len(widened)
