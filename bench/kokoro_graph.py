"""Experiment: is Kokoro faster as a float graph derived from the shipped int8 one? (No.)

The Kokoro-82M export on PyPI is dynamically quantised: every convolution and matrix product
runs as ``DynamicQuantizeLinear`` (activations to uint8 at run time) -> ``ConvInteger`` /
``MatMulInteger`` -> ``Cast`` -> ``Mul`` by the scales, with the biases re-quantised on every
call. Profiled on one core (onnxruntime 1.32), ``ConvInteger`` was 67 % of Kokoro's time and
the quantise/cast/rescale glue ~5 %. This script rewrites each of those patterns as the float
operator it stands for, with the weights dequantised once (``(w - zero_point) * scale``) and
the float bias put back:

* ``MatMulInteger -> Cast -> Mul(scales)`` becomes ``MatMul(x, W)``;
* ``ConvInteger -> Cast -> Mul(scales)`` becomes ``Conv(x, W)``;
* ``ConvInteger -> Add(quantised bias) -> Cast -> Mul(scales)`` becomes ``Conv(x, W, b)``;
* ``DynamicQuantizeLSTM`` becomes ``LSTM`` (its weights are stored transposed).

The quantisation nodes left without consumers are removed (694 of 3614; no integer op is
left). Result, measured as CPU seconds per second of audio on one thread (the machine was
shared, so wall times were not comparable; CPU time is): int8 0.91-0.97, float 1.11-1.13, and
float with the 1-D convolutions as 2-D ones (onnxruntime's NCHWc kernels) 1.01-1.03. The
float ``Conv`` does the same ~65 GFLOP per second of speech at ~75 GFLOP/s as ``ConvInteger``
does in int8, so the rewrite only removes the glue and pays for 4x the weight traffic: the
server keeps the int8 graph. Kokoro's cost is its decoder's arithmetic, not its operators.

    pip install onnx==1.23.2   # not a dependency of the server
    python bench/kokoro_graph.py INT8.onnx OUT.onnx [--compare]
"""

from __future__ import annotations

import hashlib
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ConversionReport", "convert", "convert_file"]

_INTEGER_OPS = ("ConvInteger", "MatMulInteger")


@dataclass
class ConversionReport:
    """What was rewritten, by pattern, and what remains quantised."""

    rewritten: dict[str, int] = field(default_factory=dict)
    removed_nodes: int = 0
    remaining_integer_ops: int = 0

    def count(self, pattern: str) -> None:
        self.rewritten[pattern] = self.rewritten.get(pattern, 0) + 1


class _Graph:
    """Index of a graph's producers, consumers and initializers, for rewriting."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.numpy_helper = numpy_helper
        self.inits: dict[str, Any] = {i.name: i for i in graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers[inp].append(node)

    def array(self, name: str) -> npt.NDArray[Any]:
        return np.asarray(self.numpy_helper.to_array(self.inits[name]))

    def only_consumer(self, name: str, op_type: str) -> Any | None:
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type:
            return users[0]
        return None

    def scale_of(self, scales_name: str) -> npt.NDArray[np.float32] | None:
        """The weight scale inside ``Mul(activation_scale, weight_scale)``."""
        node = self.producer.get(scales_name)
        if node is None or node.op_type != "Mul":
            return None
        consts = [name for name in node.input if name in self.inits]
        if len(consts) != 1:
            return None
        return self.array(consts[0]).astype(np.float32)

    def float_bias(self, quantised_bias: str) -> npt.NDArray[np.float32] | None:
        """The float bias behind ``Reshape(Cast(Floor(Div(bias, scale))))``."""
        node = self.producer.get(quantised_bias)
        for op in ("Reshape", "Cast", "Floor", "Div"):
            if node is None or node.op_type != op:
                return None
            if op == "Div":
                name = node.input[0]
                return self.array(name).astype(np.float32) if name in self.inits else None
            node = self.producer.get(node.input[0])
        return None


def _dequantise(
    weights: npt.NDArray[Any], zero_point: npt.NDArray[Any], scale: npt.NDArray[np.float32], axis: int
) -> npt.NDArray[np.float32]:
    """``(w - zero_point) * scale`` with per-tensor or per-channel parameters along ``axis``."""
    shape = [1] * weights.ndim
    shape[axis] = -1

    def along(value: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return value if value.size == 1 else value.reshape(shape)

    w = weights.astype(np.float32) - along(zero_point.astype(np.float32))
    return np.ascontiguousarray(w * along(scale), dtype=np.float32)


def convert(model: Any, select: Callable[[Any], bool] | None = None) -> ConversionReport:
    """Rewrite ``model`` (an ``onnx.ModelProto``) in place; see the module doc.

    ``select``: rewrite only the integer nodes (and LSTMs) it accepts (default: all)."""
    from onnx import helper

    report = ConversionReport()
    g = _Graph(model.graph)
    remove: set[int] = set()
    new_nodes: dict[int, Any] = {}  # position of the first removed node -> its replacement
    new_inits: list[Any] = []
    positions = {id(node): i for i, node in enumerate(model.graph.node)}

    made: dict[str, str] = {}  # ALBERT shares its layers' weights: dequantise each once

    def add_init(name: str, value: npt.NDArray[np.float32]) -> str:
        if name not in made:
            new_inits.append(g.numpy_helper.from_array(value, name))
            made[name] = name
        return made[name]

    for node in list(model.graph.node):
        if node.op_type not in _INTEGER_OPS or len(node.input) < 4:
            continue
        if select is not None and not select(node):
            continue
        xq, wq, _xzp, wzp = node.input[:4]
        quantiser = g.producer.get(xq)
        if quantiser is None or quantiser.op_type != "DynamicQuantizeLinear" or wq not in g.inits:
            continue
        source = quantiser.input[0]
        chain = [node]
        bias = None
        after = g.consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Add":
            add = after[0]
            other = next(name for name in add.input if name != node.output[0])
            bias = g.float_bias(other)
            if bias is None:
                continue
            chain.append(add)
            cast = g.only_consumer(add.output[0], "Cast")
        else:
            cast = g.only_consumer(node.output[0], "Cast")
        if cast is None:
            continue
        mul = g.only_consumer(cast.output[0], "Mul")
        if mul is None:
            continue
        scales = next(name for name in mul.input if name != cast.output[0])
        w_scale = g.scale_of(scales)
        if w_scale is None:
            continue
        chain += [cast, mul]
        weights = g.array(wq)
        axis = weights.ndim - 1 if node.op_type == "MatMulInteger" else 0
        key = f"{wq}_float_{hashlib.sha256(w_scale.tobytes() + g.array(wzp).tobytes()).hexdigest()[:8]}"
        w_name = add_init(key, _dequantise(weights, g.array(wzp), w_scale, axis))
        if node.op_type == "MatMulInteger":
            replacement = helper.make_node(
                "MatMul", [source, w_name], [mul.output[0]], name=f"{node.name}_float"
            )
            report.count("MatMulInteger")
        else:
            inputs = [source, w_name]
            if bias is not None:
                inputs.append(add_init(f"{node.name}_bias_float", bias))
            replacement = helper.make_node("Conv", inputs, [mul.output[0]], name=f"{node.name}_float")
            replacement.attribute.extend(node.attribute)
            report.count("ConvInteger+bias" if bias is not None else "ConvInteger")
        first = min(positions[id(n)] for n in chain)
        for n in chain:
            remove.add(positions[id(n)])
        new_nodes[first] = replacement

    for node in list(model.graph.node):
        if node.op_type == "DynamicQuantizeLSTM" and (select is None or select(node)):
            replacement = _float_lstm(g, node, add_init)
            if replacement is not None:
                i = positions[id(node)]
                remove.add(i)
                new_nodes[i] = replacement
                report.count("DynamicQuantizeLSTM")

    kept: list[Any] = []
    for i, node in enumerate(model.graph.node):
        if i in new_nodes:
            kept.append(new_nodes[i])
        if i not in remove:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(new_inits)
    report.removed_nodes = _remove_dead(model)
    report.remaining_integer_ops = sum(
        1 for n in model.graph.node if n.op_type in (*_INTEGER_OPS, "DynamicQuantizeLSTM")
    )
    return report


def _float_lstm(g: _Graph, node: Any, add_init: Any) -> Any | None:
    """``DynamicQuantizeLSTM`` (W: [dirs, input, 4*hidden], quantised) -> ``LSTM``."""
    from onnx import helper

    inputs = list(node.input) + [""] * (12 - len(node.input))
    x, wq, rq, b, seq_lens, h0, c0, p, ws, wzp, rs, rzp = inputs[:12]
    if not all(name in g.inits for name in (wq, rq, ws, wzp, rs, rzp)):
        return None

    def weights(q: str, s: str, zp: str) -> npt.NDArray[np.float32]:
        values = g.array(q).astype(np.float32)  # [dirs, in, 4h]
        scale = g.array(s).astype(np.float32)
        zero = g.array(zp).astype(np.float32)
        # per direction ([dirs]) or per direction and output column ([dirs, 4h])
        scale = scale.reshape(values.shape[0], 1, -1)
        zero = zero.reshape(values.shape[0], 1, -1)
        return np.ascontiguousarray(np.transpose((values - zero) * scale, (0, 2, 1)), dtype=np.float32)

    w = add_init(f"{wq}_float", weights(wq, ws, wzp))
    r = add_init(f"{rq}_float", weights(rq, rs, rzp))
    lstm_inputs = [x, w, r, b, seq_lens, h0, c0, p]
    while lstm_inputs and not lstm_inputs[-1]:
        lstm_inputs.pop()
    lstm = helper.make_node("LSTM", lstm_inputs, list(node.output), name=f"{node.name}_float")
    lstm.attribute.extend(node.attribute)
    return lstm


def _remove_dead(model: Any) -> int:
    """Drop nodes whose outputs nobody uses, and initializers nobody reads."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept: list[Any] = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output) or _has_subgraph(node):
            kept.append(node)
            needed.update(name for name in node.input if name)
    removed = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used_inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used_inits)
    return removed


def _has_subgraph(node: Any) -> bool:
    return any(attr.type in (5, 10) for attr in node.attribute)  # GRAPH, GRAPHS: keep, not traced


def convert_file(source: Path, target: Path) -> ConversionReport:
    """Convert the ONNX file ``source`` and write the result to ``target``."""
    import onnx

    model = onnx.load(str(source))
    report = convert(model)
    onnx.save(model, str(target))
    return report


def compare(models: Sequence[Path], repeats: int = 3) -> None:
    """CPU seconds per audio second of each model on one thread, interleaved."""
    import time

    import onnxruntime as ort
    from kokoro_onnx import Kokoro

    from openrealtime.engines.tts.kokoro import kokoro_assets

    voices = str(kokoro_assets(model=False).voices)
    engines = {}
    for path in models:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        engines[path.name] = Kokoro.from_session(session, voices_path=voices)
    first = next(iter(engines.values()))
    phonemes = first.tokenizer.phonemize("Thanks for waiting. I found your order from last Tuesday.", "en-us")
    style = first.voices["jf_alpha"]
    costs: dict[str, list[float]] = {name: [] for name in engines}
    for engine in engines.values():
        engine.create(phonemes, voice=style, is_phonemes=True)
    for _ in range(repeats):
        for name, engine in engines.items():
            start = time.process_time()
            audio, rate = engine.create(phonemes, voice=style, is_phonemes=True)
            costs[name].append((time.process_time() - start) / (len(audio) / rate))
    for name, values in costs.items():
        print(f"{name:32} CPU s per audio s: {' '.join(f'{v:.2f}' for v in values)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--compare" in args
    args = [a for a in args if a != "--compare"]
    if len(args) != 2:
        print("usage: python bench/kokoro_graph.py INT8.onnx OUT.onnx [--compare]", file=sys.stderr)
        return 2
    report = convert_file(Path(args[0]), Path(args[1]))
    print(
        f"rewritten {report.rewritten}; removed {report.removed_nodes} nodes; "
        f"{report.remaining_integer_ops} integer ops left"
    )
    if check:
        compare([Path(args[0]), Path(args[1])])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
