"""The growth engine: sites, metrics, triggers, initializers, optimizer surgery.

Knows nothing about scikit-learn; depends on torch, numpy, scipy (and skorch for the
callback).
"""

from .callback import EVENT_COLUMNS, GrowthCallback
from .context import GrowthContext, SampleBuffer, SiteActivations
from .initializers import (
    INITIALIZERS,
    Initializer,
    PreActivationInit,
    RandomInit,
    SelectInit,
    WeightInit,
)
from .metrics import activation_metric, count_singular_values_above, weight_metric
from .optim import extend_optimizer_state, grow_parameter
from .sites import Consumer, GrowthSite, NewNeurons, add_neurons
from .strategies import STRATEGIES, make_strategy
from .triggers import (
    TRIGGERS,
    ActivationTrigger,
    Never,
    Trigger,
    TriggerDecision,
    WeightTrigger,
)

__all__ = [
    "EVENT_COLUMNS",
    "INITIALIZERS",
    "STRATEGIES",
    "TRIGGERS",
    "ActivationTrigger",
    "Consumer",
    "GrowthCallback",
    "GrowthContext",
    "GrowthSite",
    "Initializer",
    "Never",
    "NewNeurons",
    "PreActivationInit",
    "RandomInit",
    "SampleBuffer",
    "SelectInit",
    "SiteActivations",
    "Trigger",
    "TriggerDecision",
    "WeightInit",
    "WeightTrigger",
    "activation_metric",
    "add_neurons",
    "count_singular_values_above",
    "extend_optimizer_state",
    "grow_parameter",
    "make_strategy",
    "weight_metric",
]
