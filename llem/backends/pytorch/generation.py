"""Generation settings of the PyTorch backend: transformers' ``GenerationConfig`` from the table.

Every decoder and pytorch row whose ``engine_target`` is ``generation`` is passed to
``GenerationConfig.update`` under the engine's name, as the config sets it
(:func:`llem.backends.table.engine_kwargs`); what the table's skip rules say has no effect
never arrives here through :func:`llem.run`. After ``update`` the values transformers will
use are read back (the config's value, else transformers' default) into ``effective``.

Three translations are the backend's own, as no row can state them:

- ``decoder.temperature=0`` means greedy decoding (the seed's convention): transformers has
  no temperature 0, so ``do_sample=False`` is passed instead (unless ``do_sample=True``
  is set with it, which the table refuses; transformers then refuses it too);
- a cache kind the model or its placement cannot hold (``offloaded*`` for a model that is
  not on a GPU, ``sliding_window`` for a model without a sliding attention window) is not
  passed, and is reported in ``skipped``: these are facts of the loaded model;
- ``pytorch.output_scores`` also asks for ``return_dict_in_generate`` (the scores come
  back in it).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from llem import spec
from llem.backends.pytorch.failures import refuse_passthrough_clash, refused
from llem.backends.table import decoder_of, engine_kwargs
from llem.backends.table import field as _get

#: Decoder rows that go to transformers' GenerationConfig (the table's engine_target).
DECODER_FIELDS = tuple(
    a.row.name for a in spec.engine_args("pytorch", section="decoder", target="generation")
)
#: Those that only act when sampling (the fields of the table's rule sampling-params-greedy):
#: read back only when transformers samples.
SAMPLING_FIELDS = tuple(
    n for n in DECODER_FIELDS if f"decoder.{n}" in spec.rule("sampling-params-greedy").skip
)
#: Those that only act with beam search (the rule beam-params-single-beam): read back only then.
BEAM_FIELDS = tuple(n for n in DECODER_FIELDS if f"decoder.{n}" in spec.rule("beam-params-single-beam").skip)
#: Those read back whatever the decoding mode.
ALWAYS_FIELDS = tuple(
    n for n in DECODER_FIELDS if n != "do_sample" and n not in SAMPLING_FIELDS + BEAM_FIELDS
)
#: Row name -> GenerationConfig attribute, for every row that goes there.
GENERATION_NAMES = {a.row.name: a.name for a in spec.engine_args("pytorch", target="generation")}


@dataclass
class Decode:
    """The decode-time settings in force: what ``generate`` gets, and what was resolved.

    Attributes
    ----------
    gen_config : transformers.GenerationConfig
        Passed as ``generate(generation_config=...)``.
    extra : dict
        The other keyword arguments of ``generate`` (the draft model, pass-through keys).
    effective, skipped, notes
        As in :class:`~llem.backends.base.LoadInfo`.
    max_batch_size : int or None
        1 for assisted generation (transformers' limit), else None.
    """

    gen_config: Any
    extra: dict[str, Any]
    effective: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    max_batch_size: int | None = None


@dataclass
class Draft:
    """A loaded draft model for assisted generation: its name and what ``generate`` gets."""

    name: str
    model: Any
    tokenizer: Any
    extra: dict[str, Any]


def split_passthrough(passthrough: Any) -> dict[str, dict[str, Any]]:
    """Split pass-through keyword arguments into ``{"load": {...}, "generate": {...}}``.

    A flat key goes to ``generate`` when it is a generation setting of transformers, else
    to ``from_pretrained``.
    """
    out: dict[str, dict[str, Any]] = {"load": {}, "generate": {}}
    if not passthrough:
        return out
    flat = {}
    for k, v in dict(passthrough).items():
        if k in ("load", "generate") and isinstance(v, dict):
            out[k].update(v)
        else:
            flat[k] = v
    if flat:
        from transformers import GenerationConfig

        gen_names = set(vars(GenerationConfig()))
        for k, v in flat.items():
            out["generate" if k in gen_names else "load"][k] = v
    return out


def generation_defaults(cls: Any) -> dict[str, Any]:
    """The defaults transformers uses for the generation settings a GenerationConfig leaves None."""
    getter = getattr(cls, "_get_default_generation_params", None)
    if getter is not None:
        try:
            return dict(getter())
        except Exception:  # noqa: BLE001
            pass
    return {}


def _assisted(gen_config: Any, assistant_model: Any) -> bool:
    """Whether transformers will run assisted generation (a draft model or prompt lookup)."""
    try:
        mode = gen_config.get_generation_mode(assistant_model)
        return getattr(mode, "value", mode) == "assisted_generation"
    except Exception:  # noqa: BLE001 - an older transformers: its rule for these two
        wants = assistant_model is not None or gen_config.prompt_lookup_num_tokens is not None
        return wants and (gen_config.num_beams or 1) <= 1


def decode_settings(
    model: Any,
    tokenizer: Any,
    config: Any,
    *,
    on_gpu: bool,
    compiled: bool,
    draft: Draft | None = None,
    passthrough: dict[str, Any] | None = None,
) -> Decode:
    """The generation settings of ``config`` for the loaded ``model``.

    Parameters
    ----------
    model, tokenizer
        The loaded transformers objects (the model's ``generation_config`` is the base).
    config : ExperimentConfig or stand-in
        Its decoder section (preset expanded) and pytorch section.
    on_gpu : bool
        Whether the model's weights are on a GPU (an offloaded cache needs one).
    compiled : bool
        llem compiled the forward pass itself: transformers must not compile again.
    draft : Draft, optional
        The loaded ``assistant_model``.
    passthrough : dict, optional
        ``passthrough.generate``: generation settings into the config, anything else to
        ``generate``; a key a named field sets is refused.

    Raises
    ------
    ConfigError
        transformers refuses the settings, or a pass-through key repeats a named one.
    """
    from transformers import GenerationConfig

    dec = decoder_of(config)
    pt = _get(config, "pytorch")
    base = model.generation_config
    defaults = generation_defaults(GenerationConfig)
    skipped: dict[str, str] = {}
    notes: list[str] = []
    extra: dict[str, Any] = {}
    kw = engine_kwargs(config, "pytorch", "generation", decoder=dec)  # every set row, as asked

    temperature, do_sample = GENERATION_NAMES["temperature"], GENERATION_NAMES["do_sample"]
    if kw.get(temperature) == 0 and kw.get(do_sample) is not True:
        del kw[temperature]
        kw[do_sample] = False
        skipped["decoder.temperature"] = "0 means greedy decoding (llem's convention): do_sample set to False"

    impl = kw.get("cache_implementation")
    if impl is not None and impl.startswith("offloaded") and not on_gpu:
        del kw["cache_implementation"]
        skipped["pytorch.cache_implementation"] = (
            f"{impl!r} offloads the cache from a GPU to the CPU; the model is not on a GPU, "
            "the default dynamic cache was used"
        )
    elif impl == "sliding_window" and not getattr(model.config, "sliding_window", None):
        del kw["cache_implementation"]
        skipped["pytorch.cache_implementation"] = (
            "'sliding_window' needs a model with a sliding attention window; this model has "
            "none, the default dynamic cache was used"
        )

    if draft is not None:
        extra.update(draft.extra)
    if kw.get("output_scores"):
        kw["return_dict_in_generate"] = True  # a protocol argument: the scores come back in it

    named = set(kw) | set(extra)
    gen_cfg = copy.deepcopy(base)
    try:
        gen_cfg.update(**kw)
        gen_cfg.validate()
    except ValueError as exc:
        raise refused("generation settings", exc) from None
    if gen_cfg.pad_token_id is None:
        gen_cfg.pad_token_id = tokenizer.pad_token_id
    if compiled or _get(pt, "torch_compile") is False:
        gen_cfg.disable_compile = True  # llem compiled forward itself, or compile is off
    pass_gen = passthrough or {}
    refuse_passthrough_clash(pass_gen, dict.fromkeys(named), "generate")
    for key, value in pass_gen.items():
        if hasattr(gen_cfg, key):
            setattr(gen_cfg, key, value)  # a generation setting: into the config
        else:
            extra[key] = value  # anything else generate() takes

    assisted = _assisted(gen_cfg, extra.get("assistant_model"))
    if assisted:
        notes.append("Assisted generation in transformers runs one prompt at a time: batch size 1 is used.")
    effective = _read_back(gen_cfg, defaults, notes, dec, draft if assisted else None, assisted)
    return Decode(gen_cfg, extra, effective, skipped, notes, 1 if assisted else None)


def _read_back(gen_cfg: Any, defaults: dict[str, Any], notes: list[str], dec: Any,
               draft: Draft | None, assisted: bool) -> dict[str, Any]:
    """The values transformers will use: the generation config's, else transformers' defaults."""

    def eff(name: str) -> Any:
        name = GENERATION_NAMES.get(name, name)
        v = getattr(gen_cfg, name, None)
        return defaults.get(name) if v is None else v

    effective: dict[str, Any] = {}
    sampling = bool(eff("do_sample"))
    effective["decoder.do_sample"] = sampling
    if sampling:
        effective.update({f"decoder.{n}": eff(n) for n in SAMPLING_FIELDS})
    effective.update({f"decoder.{n}": eff(n) for n in ALWAYS_FIELDS})
    if (eff("num_beams") or 1) > 1:
        effective.update({f"decoder.{n}": eff(n) for n in BEAM_FIELDS})
    max_new = gen_cfg.max_new_tokens
    if max_new is None:
        max_new = eff("max_length")
        notes.append(
            f"decoder.max_new_tokens unset: transformers generates up to {max_new} new "
            "tokens (its max_length default)."
        )
    effective["decoder.max_new_tokens"] = max_new
    effective["pytorch.use_cache"] = bool(eff("use_cache"))
    effective["pytorch.cache_implementation"] = (
        gen_cfg.cache_implementation or "dynamic" if eff("use_cache") else None
    )
    if draft is not None:
        effective["pytorch.assistant_model"] = draft.name
        effective["pytorch.num_assistant_tokens"] = eff("num_assistant_tokens")
    elif assisted:
        effective["pytorch.prompt_lookup_num_tokens"] = gen_cfg.prompt_lookup_num_tokens
    effective["pytorch.output_scores"] = bool(eff("output_scores"))
    effective["decoder.seed"] = _get(dec, "seed")
    return effective
