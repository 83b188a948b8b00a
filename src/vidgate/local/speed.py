"""Speed options, each off by default and each a diffusers or torch feature, not our own:

- ``compile``: ``torch.compile`` of the transformer(s) (in place; caches work without
  ``fullgraph``).
- ``cache``: diffusers' cache hooks on the transformer — First Block Cache, or TaylorSeer
  (on Wan its default module patterns match nothing, so the attention modules are named).
- ``attention``: ``transformer.set_attention_backend`` ("native", "flex", "_native_flash", …).
- ``offload``: ``enable_model_cpu_offload`` or ``enable_group_offload`` (block level).
- ``vae_tiling``: ``vae.enable_tiling()``.

A cache skips work inside the transformer, not transformer calls, so :class:`SkipCounter`
counts the cached modules' calls that ran none of their children: the calls it saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

CacheKind = Literal["none", "first-block", "taylorseer"]
OffloadKind = Literal["none", "model", "group"]
CACHES: tuple[str, ...] = ("none", "first-block", "taylorseer")
OFFLOADS: tuple[str, ...] = ("none", "model", "group")

#: TaylorSeer's default patterns match no Wan module: cache the self/cross attention instead
TAYLORSEER_IDENTIFIERS: dict[str, list[str]] = {
    "wan": [r"blocks\.\d+\.attn\d"],
    "wan22": [r"blocks\.\d+\.attn\d"],
}


@dataclass(frozen=True)
class SpeedOptions:
    compile: bool = False
    compile_backend: str = "inductor"
    cache: CacheKind = "none"
    cache_threshold: float = 0.05  # First Block Cache: residual change below this skips
    attention: str | None = None  # None: the model's default ("native")
    offload: OffloadKind = "none"
    vae_tiling: bool = False

    def wire(self) -> dict[str, Any]:
        out = asdict(self)
        out["attention"] = self.attention or "native"
        if not self.compile:
            out.pop("compile_backend")
        if self.cache != "first-block":
            out.pop("cache_threshold")
        return out


class SkipCounter:
    """Counts calls of cache-hooked modules that computed nothing (no child module ran)."""

    def __init__(self) -> None:
        self.calls = 0
        self.skipped = 0
        self._ran: dict[int, bool] = {}

    def watch(self, module: Any) -> None:
        key = id(module)

        def pre(_m: Any, _args: Any) -> None:
            self._ran[key] = False

        def child_ran(_m: Any, _args: Any, _out: Any) -> None:
            self._ran[key] = True

        def post(_m: Any, _args: Any, _out: Any) -> None:
            # No lock: hooks run on the one device thread, and a lock would break
            # torch.compile's graph at every block.
            self.calls += 1
            if not self._ran.get(key, True):
                self.skipped += 1

        module.register_forward_pre_hook(pre)
        for child in module.children():
            child.register_forward_hook(child_ran)
        module.register_forward_hook(post)


def transformers_of(pipe: Any) -> list[Any]:
    """The denoisers: Wan 2.2 A14B has two experts."""
    return [
        t
        for t in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None))
        if t is not None
    ]


def _cache_config(kind: CacheKind, family: str, threshold: float) -> Any:
    import diffusers

    lib: Any = diffusers  # its config classes are untyped
    if kind == "first-block":
        return lib.FirstBlockCacheConfig(threshold=threshold)
    return lib.TaylorSeerCacheConfig(cache_identifiers=TAYLORSEER_IDENTIFIERS.get(family))


def _hooked(transformer: Any) -> list[Any]:
    """Modules inside ``transformer`` that carry a diffusers cache hook."""
    found = []
    for name, module in transformer.named_modules():
        registry = getattr(module, "_diffusers_hook", None)
        if name and registry is not None and registry.hooks:
            found.append(module)
    return found


def apply(pipe: Any, options: SpeedOptions, family: str, device: str) -> SkipCounter | None:
    """Turn the options on (in the order diffusers wants them) and place the pipeline."""
    import torch

    counter: SkipCounter | None = None
    for transformer in transformers_of(pipe):
        if options.attention:
            transformer.set_attention_backend(options.attention)
        if options.cache != "none":
            transformer.enable_cache(_cache_config(options.cache, family, options.cache_threshold))
            counter = counter or SkipCounter()
            modules = _hooked(transformer)
            if not modules:
                raise ValueError(f"cache {options.cache}: it hooked no module of this model")
            for module in modules:
                counter.watch(module)
    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif options.offload == "group":
        pipe.enable_group_offload(
            onload_device=torch.device(device),
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
        )
    else:
        pipe.to(device)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.compile:
        for transformer in transformers_of(pipe):
            # In place (nn.Module.compile) so the pipeline, its hooks and offloading keep
            # the same module object.
            transformer.compile(backend=options.compile_backend)
    return counter
