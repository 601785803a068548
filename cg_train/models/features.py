"""Inner features of any registered model, by name, through forward hooks: no model is rewritten.

A *feature reference* names one tensor of a model's forward pass:

* ``PATH``: the output of the module at ``PATH`` (``layers.2``, ``layer3``, ``features.6``);
* ``PATH:in``: the (first positional) input of that module;
* an FX node name of torchvision's feature extraction (``layers.2.add``: the sum of a residual
  block before its ReLU; ``layer1.0.relu_1``: the second call of a reused module), for what no
  module outputs, e.g. pre-activations;
* ``embedding``: the input of the model's last ``nn.Linear`` (the penultimate, pooled features);
  ``logits``: the model's output;
* RepDistiller's lists per model family (:data:`LAYOUTS`): ``feat[i]`` / ``feat[a:b]`` (stem,
  the output of every stage, the embedding: RepDistiller's ``is_feat=True`` list) and
  ``preact[...]`` (the same with pre-activations, RepDistiller's ``preact=True``).

:class:`FeatureTaps` resolves references once (FX is only used to *find* a node: symbolic
tracing at start-up, never in the training step) and installs the fewest hooks that capture
them: a forward hook where a module outputs the tensor, a forward pre-hook where a module
consumes it (at the right call when the module is called several times), and for a tensor
that only functions produce and consume (ShuffleNet V1's ``F.relu(out + res)``) hooks on its
operands plus a replay of the few functions in between. A captured tensor that the forward pass
later changes in place (the input of an ``inplace=True`` ReLU, a BatchNorm output followed by
one) is cloned at capture; which ones is measured in :meth:`FeatureTaps.probe`, not guessed.
Hooks capture only while armed (the training forward of the student, the teacher's forward in
the supervision) and are removed by :meth:`FeatureTaps.remove`; a run that asks for no feature
installs none.
"""
from __future__ import annotations

import difflib
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError

#: References every model has.
EMBEDDING, LOGITS = "embedding", "logits"
_LIST = re.compile(r"(feat|preact)\[(-?\d*)(?::(-?\d*))?\]")


@dataclass(frozen=True)
class Layout:
    """RepDistiller's feature lists of one model: ``feat`` (post-activation) and ``preact``."""

    feat: tuple[str, ...]
    preact: tuple[str, ...]


Layouter = Callable[[nn.Module], Layout]
#: (model class, its layout function), most specific first; a new family is one function and one line.
LAYOUTS: list[tuple[type, Layouter]] = []


def layout_for(cls: type) -> Callable[[Layouter], Layouter]:
    def deco(fn: Layouter) -> Layouter:
        LAYOUTS.append((cls, fn))
        return fn
    return deco


def model_layout(model: nn.Module) -> Optional[Layout]:
    for cls, fn in LAYOUTS:
        if isinstance(model, cls):
            return fn(model)
    return None


def expand(refs: Sequence[str], model: nn.Module, what: str) -> list[str]:
    """``feat[1:-1]`` and friends -> the concrete references of ``model``; others unchanged."""
    out: list[str] = []
    for ref in refs:
        match = _LIST.fullmatch(ref.replace(" ", ""))
        if match is None:
            out.append(ref)
            continue
        layout = model_layout(model)
        if layout is None:
            raise ConfigError(f"{what}: {ref!r} needs RepDistiller's feature list, which {type(model).__name__} "
                              f"does not have: name its modules instead (e.g. --student-features "
                              f"layer3,embedding; `cg-train features ARCH` lists them)")
        kind, lo, hi = match.groups()
        items = getattr(layout, kind)
        if hi is None:  # feat[i]
            i = int(lo)
            if not -len(items) <= i < len(items):
                raise ConfigError(f"{what}: {ref!r} is out of range: {type(model).__name__} has {len(items)} "
                                  f"{kind} features ({', '.join(items)})")
            out.append(items[i])
        else:
            out.extend(items[slice(int(lo) if lo else None, int(hi) if hi else None)])
    return out


# --------------------------------------------------------------------------- where a reference is captured

@dataclass(frozen=True)
class Point:
    """One hook site: the ``call``-th call (0-based, per forward of the root) of ``module``'s output or input."""

    module: str
    where: str  # "output" or "input"
    call: int = 0
    clone: bool = False  # the forward pass changes the tensor in place later


@dataclass
class Replay:
    """A tensor that functions compute from captured points: ``fn(*args)`` with ``args`` points or replays."""

    fn: Callable[..., Any]
    args: tuple
    kwargs: dict = field(default_factory=dict)


Source = "Point | Replay"


def _last_linear(model: nn.Module) -> str:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer, so no 'embedding': name the module "
                          f"whose output to use")
    return names[-1]


def _trace(model: nn.Module) -> tuple[Any, dict[Any, str]]:
    from torchvision.models.feature_extraction import NodePathTracer

    tracer = NodePathTracer()
    was_training = model.training
    try:
        graph = tracer.trace(model.train())  # the training graph: that is what the hooks see
    except Exception as exc:  # data-dependent control flow and friends
        raise ConfigError(f"{type(model).__name__} cannot be traced by torch.fx ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:120]}): name module outputs (PATH) or inputs (PATH:in) "
                          f"instead of FX nodes") from None
    finally:
        model.train(was_training)
    return graph, tracer.node_to_qualname


class _Resolver:
    """Reference -> Point/Replay for one model (traces it once, on the first FX name)."""

    def __init__(self, model: nn.Module, what: str):
        self.model, self.what = model, what
        self.modules = dict(model.named_modules())
        self.graph: Any = None
        self.names: dict[Any, str] = {}

    def resolve(self, ref: str) -> Any:
        if ref == LOGITS:
            return Point("", "output")
        if ref == EMBEDDING:
            return Point(_last_linear(self.model), "input")
        if ref.endswith(":in") and ref[:-3] in self.modules:
            return Point(ref[:-3], "input")
        if ref in self.modules and ref != "":
            return Point(ref, "output")
        if self.graph is None:
            self.graph, self.names = _trace(self.model)
        by_name = {self.names.get(n, n.name): n for n in self.graph.nodes}
        if ref not in by_name:
            choices = [n for n in [*self.modules, *by_name] if n]
            close = difflib.get_close_matches(ref, choices, n=3)
            raise ConfigError(f"{self.what}: {type(self.model).__name__} has no module or FX node {ref!r}"
                              f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}; "
                              f"`cg-train features ARCH` lists them")
        return self._node(by_name[ref])

    def _call_index(self, node: Any) -> int:
        same = [n for n in self.graph.nodes if n.op == "call_module" and n.target == node.target]
        return same.index(node)

    def _node(self, node: Any, depth: int = 0) -> Any:
        if node.op == "call_module":
            return Point(node.target, "output", self._call_index(node))
        if node.op == "placeholder":
            return Point("", "input")
        consumers = [u for u in node.users if u.op == "call_module" and u.args and u.args[0] is node]
        if consumers:
            return Point(consumers[0].target, "input", self._call_index(consumers[0]))
        if node.op == "get_attr" or depth > 8:
            raise ConfigError(f"{self.what}: FX node {self.names.get(node, node.name)!r} of "
                              f"{type(self.model).__name__} is neither a module's output nor input: name a module")
        fn = node.target if node.op == "call_function" else _method(node.target)
        convert = lambda a: self._node(a, depth + 1) if hasattr(a, "op") else a  # noqa: E731
        args = tuple(_map(convert, a) for a in node.args)
        kwargs = {k: _map(convert, v) for k, v in node.kwargs.items()}
        return Replay(fn, args, kwargs)


def _method(name: str) -> Callable[..., Any]:
    def call(obj: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(obj, name)(*args, **kwargs)
    call.__name__ = name
    return call


def _map(fn: Callable[[Any], Any], value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_map(fn, v) for v in value)
    return fn(value)


def _points(source: Any) -> Iterator[Point]:
    if isinstance(source, Point):
        yield source
    elif isinstance(source, Replay):
        for a in (*source.args, *source.kwargs.values()):
            for item in (a if isinstance(a, (list, tuple)) else (a,)):
                yield from _points(item)


# --------------------------------------------------------------------------- hooks

class FeatureTaps:
    """Capture the tensors ``refs`` names during ``model``'s forward, while armed.

    ``arm``: ``"always"`` (armed by :meth:`capture`, for the teacher) or ``"grad"`` (armed whenever
    gradients are enabled: the student's training forward, which runs in the trainer; evaluation and
    scoring passes run without gradients and capture nothing).
    """

    def __init__(self, model: nn.Module, refs: Sequence[str], what: str, arm: str = "always"):
        self.model, self.what, self.arm = model, what, arm
        self.refs = expand(refs, model, what)
        resolver = _Resolver(model, what)
        self.sources = [resolver.resolve(ref) for ref in self.refs]
        self.points = list(dict.fromkeys(p for s in self.sources for p in _points(s)))
        self._armed = False
        self.enabled = True  # False: capture nothing, even when armed (a stage that reads no feature)
        self._values: dict[Point, torch.Tensor] = {}
        self._versions: dict[Point, int] = {}
        self._calls: dict[tuple[str, str], int] = {}
        self._handles: list[Any] = []
        self._install()

    # ------------------------------------------------------------------ hooks
    def _install(self) -> None:
        modules = dict(self.model.named_modules())
        by_site: dict[tuple[str, str], list[Point]] = {}
        for p in self.points:
            by_site.setdefault((p.module, p.where), []).append(p)
        self._handles.append(self.model.register_forward_pre_hook(self._reset))
        for (name, where), points in by_site.items():
            module = modules[name]
            if where == "output":
                hook = self._output_hook(name, points)
                self._handles.append(module.register_forward_hook(hook))
            else:
                hook = self._input_hook(name, points)
                self._handles.append(module.register_forward_pre_hook(hook))

    def _reset(self, module: nn.Module, args: Any) -> None:
        self._calls.clear()

    def _active(self) -> bool:
        return self.enabled and (self._armed or (self.arm == "grad" and torch.is_grad_enabled()))

    def _store(self, site: tuple[str, str], points: list[Point], value: Any) -> None:
        call = self._calls.get(site, 0)
        self._calls[site] = call + 1
        for p in points:
            if p.call == call and isinstance(value, torch.Tensor):
                self._values[p] = value.clone() if p.clone else value
                self._versions[p] = value._version

    def _output_hook(self, name: str, points: list[Point]) -> Callable[..., None]:
        site = (name, "output")

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._active():
                self._store(site, points, output)
        return hook

    def _input_hook(self, name: str, points: list[Point]) -> Callable[..., None]:
        site = (name, "input")

        def hook(module: nn.Module, args: Any) -> None:
            if self._active() and args:
                self._store(site, points, args[0])
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._values.clear()

    # ------------------------------------------------------------------ use
    @contextmanager
    def capture(self) -> Iterator[None]:
        self._armed = True
        try:
            yield
        finally:
            self._armed = False

    def discard(self) -> None:
        self._values.clear()

    def read(self) -> list[torch.Tensor]:
        """The captured tensors in ``refs`` order (each forward's latest); forgets them."""
        missing = [p for p in self.points if p not in self._values]
        if missing:
            raise RuntimeError(f"{self.what}: no tensor captured at {missing[0]} (was the model run with the "
                               f"taps armed?)")
        for p in self.points:
            if not p.clone and self._values[p]._version != self._versions[p]:
                raise RuntimeError(f"{self.what}: the tensor at {p} was changed in place after it was captured")
        values = dict(self._values)
        self._values.clear()
        return [_evaluate(s, values) for s in self.sources]

    def probe(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run ``model(*inputs)`` once (mode and grad as the caller set them), mark the points the forward
        later changes in place as cloned, and return the features (e.g. for their shapes)."""
        with self.capture():
            self.model(*inputs)
        changed = {p for p in self.points if p in self._values and self._values[p]._version != self._versions[p]}
        if changed:
            self._set_points({p: replace(p, clone=True) for p in changed})
            with self.capture():
                self.model(*inputs)
        return self.read()

    def _set_points(self, renamed: dict[Point, Point]) -> None:
        def swap(s: Any) -> Any:
            if isinstance(s, Point):
                return renamed.get(s, s)
            return Replay(s.fn, tuple(_map(swap, a) for a in s.args), {k: _map(swap, v) for k, v in s.kwargs.items()})
        self.sources = [swap(s) for s in self.sources]
        self.points = [renamed.get(p, p) for p in self.points]
        for handle in self._handles:
            handle.remove()
        self._handles, self._values = [], {}
        self._install()

    def describe(self) -> list[str]:
        """One line per reference: what it resolved to (for logs, errors and the resume check)."""
        return [f"{ref} = {_describe(s)}" for ref, s in zip(self.refs, self.sources)]


def _evaluate(source: Any, values: dict[Point, torch.Tensor]) -> Any:
    if isinstance(source, Point):
        return values[source]
    if isinstance(source, Replay):
        convert = lambda a: _evaluate(a, values) if isinstance(a, (Point, Replay)) else a  # noqa: E731
        return source.fn(*(_map(convert, a) for a in source.args),
                         **{k: _map(convert, v) for k, v in source.kwargs.items()})
    return source


def _describe(source: Any) -> str:
    if isinstance(source, Point):
        call = f"#{source.call}" if source.call else ""
        return f"{source.where} of {source.module or '<model>'}{call}{' (cloned)' if source.clone else ''}"
    return f"{getattr(source.fn, '__name__', source.fn)}({', '.join(_describe(a) for a in source.args if isinstance(a, (Point, Replay)))})"


def feature_names(model: nn.Module) -> dict[str, list[str]]:
    """What ``cg-train features ARCH`` shows: the layout (if any), module paths and FX node names."""
    layout = model_layout(model)
    graph, names = _trace(model)
    out = {"modules": [n for n, _ in model.named_modules() if n],
           "fx_nodes": [names.get(n, n.name) for n in graph.nodes if n.op not in ("placeholder", "output")]}
    if layout is not None:
        out["feat"], out["preact"] = list(layout.feat), list(layout.preact)
    return out


# --------------------------------------------------------------------------- RepDistiller's layouts per family

def _stride(block: nn.Module) -> int:
    return max((m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d)), default=1)


def _stage_ends(blocks: Sequence[nn.Module]) -> list[int]:
    """Positions of the last block of each stage: a stage ends before a block that halves the size."""
    return [i for i in range(len(blocks)) if i == len(blocks) - 1 or _stride(blocks[i + 1]) > 1]


def _register_layouts() -> None:
    from torchvision.models import ResNet, VGG

    from .cifar_mobile import CifarMobileNetV2, CifarShuffleNetV1, CifarShuffleNetV2
    from .cifar_resnet import CifarResNet
    from .cifar_vgg import BLOCKS, CifarVGG
    from .simple_cnn import SimpleCNN
    from .wide_resnet import WideResNet

    @layout_for(CifarResNet)
    def _cifar_resnet(model: nn.Module) -> Layout:
        ends = _stage_ends(list(model.layers))
        return Layout(("stem", *(f"layers.{i}" for i in ends), EMBEDDING),
                      ("stem", *(f"layers.{i}.add" for i in ends), EMBEDDING))

    @layout_for(WideResNet)
    def _wrn(model: nn.Module) -> Layout:
        blocks = list(model.blocks)
        ends = _stage_ends(blocks)
        # RepDistiller's preact: the next stage's first BatchNorm applied to the stage output, the head's BN last
        pre = [f"blocks.{i + 1}.bn1" if i + 1 < len(blocks) else "head.0" for i in ends]
        return Layout(("stem", *(f"blocks.{i}" for i in ends), EMBEDDING), ("stem", *pre, EMBEDDING))

    @layout_for(CifarVGG)
    def _cifar_vgg(model: nn.Module) -> Layout:
        layers = list(model.features)
        convs = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
        depth = next(d for d, blocks in BLOCKS.items() if sum(map(len, blocks)) == len(convs))
        ends, count = [], 0
        for widths in BLOCKS[depth]:
            count += len(widths)
            ends.append(convs[count - 1])  # conv, bn, relu: the block's output is the ReLU 2 after
        feat = tuple(f"features.{i + 2}" for i in ends)
        pre = (feat[0], *(f"features.{i + 1}" for i in ends[1:]))  # RepDistiller's f0 stays post-activation
        return Layout((*feat, EMBEDDING), (*pre, EMBEDDING))

    @layout_for(CifarMobileNetV2)
    def _mobilenetv2(model: nn.Module) -> Layout:
        ends, unit = [], 0
        for _, _, n, _ in model.STAGES:
            unit += n
            ends.append(unit)  # features.0 is the stem, so stage s ends at features.<units so far>
        feat = ("features.0", *(f"features.{ends[s]}" for s in (1, 2, 4, 6)), EMBEDDING)  # RepDistiller's blocks
        return Layout(feat, feat)

    @layout_for(CifarShuffleNetV1)
    def _shufflenetv1(model: nn.Module) -> Layout:
        units = [m for m in model.features if hasattr(m, "stride")]
        ends = [i + 1 for i in range(len(units)) if i == len(units) - 1 or units[i + 1].stride == 2]
        return Layout(("features.0", *(f"features.{i}" for i in ends), EMBEDDING),
                      ("features.0", *(f"features.{i}.add" for i in ends), EMBEDDING))

    @layout_for(CifarShuffleNetV2)
    def _shufflenetv2(model: nn.Module) -> Layout:
        from .cifar_mobile import ShuffleV2Down, ShuffleV2Unit

        layers = list(model.features)
        ends = [i for i, m in enumerate(layers) if isinstance(m, ShuffleV2Unit)
                and not isinstance(layers[i + 1], ShuffleV2Unit)]
        assert not any(isinstance(layers[i + 1], ShuffleV2Down) for i in range(len(layers) - 1)
                       if isinstance(layers[i], ShuffleV2Down))
        feat = ("features.0", *(f"features.{i}" for i in ends), EMBEDDING)
        return Layout(feat, feat)  # a unit ends in a channel shuffle, not an activation

    @layout_for(SimpleCNN)
    def _simple_cnn(model: nn.Module) -> Layout:
        return Layout(("features.1", "features.4", "features.6", EMBEDDING),
                      ("features.0", "features.3", "features.6", EMBEDDING))

    @layout_for(ResNet)
    def _tv_resnet(model: nn.Module) -> Layout:
        stages = [f"layer{i}" for i in range(1, 5)]
        last = [f"{s}.{len(getattr(model, s)) - 1}.add" for s in stages]
        return Layout(("relu", *stages, EMBEDDING), ("relu", *last, EMBEDDING))

    @layout_for(VGG)
    def _tv_vgg(model: nn.Module) -> Layout:
        layers = list(model.features)
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        feat = tuple(f"features.{i - 1}" for i in pools)  # the ReLU before each max-pooling
        pre = (feat[0], *(f"features.{i - 2}" for i in pools[1:]))
        return Layout((*feat, EMBEDDING), (*pre, EMBEDDING))


_register_layouts()
