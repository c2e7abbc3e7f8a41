"""The growth engine: sites, metrics, triggers, initializers, optimizer surgery.

Knows nothing about scikit-learn; depends on torch, numpy, scipy (and skorch for the
callback).
"""

from .callback import EVENT_COLUMNS, GrowthCallback
from .context import GrowthContext, SampleBuffer, SiteActivations
from .gate import HeldOutGate
from .gradients import GradientRecorder, GradientSnapshot, SiteGradients
from .initializers import (
    INITIALIZERS,
    FireflyInit,
    GradMaxInit,
    Initializer,
    NeSTInit,
    PreActivationInit,
    RandomInit,
    SelectInit,
    WeightInit,
)
from .metrics import activation_metric, count_singular_values_above, weight_metric
from .optim import extend_optimizer_state, grow_parameter
from .schedules import SCHEDULES, BatchedSchedule, LinearSchedule
from .sites import Consumer, GrowthSite, NewNeurons, TiedChannels, add_neurons
from .strategies import STRATEGIES, make_strategy
from .triggers import (
    TRIGGERS,
    ActivationTrigger,
    GradientTrigger,
    Never,
    Trigger,
    TriggerDecision,
    WeightTrigger,
)

__all__ = [
    "EVENT_COLUMNS",
    "INITIALIZERS",
    "SCHEDULES",
    "STRATEGIES",
    "TRIGGERS",
    "ActivationTrigger",
    "BatchedSchedule",
    "Consumer",
    "FireflyInit",
    "GradMaxInit",
    "GradientRecorder",
    "GradientSnapshot",
    "GradientTrigger",
    "GrowthCallback",
    "GrowthContext",
    "GrowthSite",
    "HeldOutGate",
    "Initializer",
    "LinearSchedule",
    "NeSTInit",
    "Never",
    "NewNeurons",
    "PreActivationInit",
    "RandomInit",
    "SampleBuffer",
    "SelectInit",
    "SiteActivations",
    "SiteGradients",
    "TiedChannels",
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
