"""The table: every parameter, capability, rule and GPU tier llem knows, as data.

Configs (:mod:`llem.config`), validation, widgets, the capability matrix and the reference
docs are all derived from these rows. Importing this package imports no torch,
transformers or IPython.
"""

from llem.spec.capabilities import CAPABILITIES, precisions
from llem.spec.engines import ENGINE_TARGETS
from llem.spec.flat import flatten, is_leaf
from llem.spec.model import (
    BACKENDS,
    SECTIONS,
    Capability,
    Cond,
    EngineArg,
    EngineTarget,
    Gate,
    Param,
    Rule,
    Support,
    Tier,
)
from llem.spec.params import PARAMS, PREQUANTIZED_TEST_MODELS, PRESETS, PROFILES
from llem.spec.queries import (
    alias_prefix,
    aliases,
    all_paths,
    backend_capabilities,
    backend_specific_params,
    capability,
    decoder_param_support,
    engine_arg,
    engine_args,
    engine_targets,
    gate_for,
    gpu_gates,
    mutual_exclusions,
    param,
    param_skip_conditions,
    params,
    params_requiring_gpu_capability,
    passthrough_collisions,
    resolve_path,
    rule,
    tier_problem,
    tiers,
    validation_rules,
    value_alias,
)
from llem.spec.render import (
    capability_at,
    capability_matrix_html,
    capability_matrix_markdown,
    capability_matrix_rows,
    reference_markdown,
)
from llem.spec.rules import RULES
from llem.spec.tiers import KNOWN_GPUS, TIERS, parse_target, tier_for

__all__ = [
    "BACKENDS", "CAPABILITIES", "ENGINE_TARGETS", "KNOWN_GPUS", "PARAMS", "PREQUANTIZED_TEST_MODELS",
    "PRESETS", "PROFILES", "RULES", "SECTIONS", "TIERS", "Capability", "Cond", "EngineArg",
    "EngineTarget", "Gate", "Param", "Rule", "Support", "Tier", "alias_prefix", "aliases", "all_paths",
    "backend_capabilities", "backend_specific_params", "capability", "capability_at",
    "capability_matrix_html", "capability_matrix_markdown", "capability_matrix_rows",
    "decoder_param_support", "engine_arg", "engine_args", "engine_targets", "flatten", "gate_for",
    "gpu_gates", "is_leaf", "mutual_exclusions", "param",
    "param_skip_conditions", "params", "params_requiring_gpu_capability", "parse_target",
    "passthrough_collisions", "precisions", "reference_markdown", "resolve_path", "rule", "tier_for",
    "tier_problem", "tiers", "validation_rules", "value_alias",
]
