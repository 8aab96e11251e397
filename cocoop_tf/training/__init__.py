"""Training utilities: the paper's optimiser and schedule, PromptSRC's prompt aggregation."""

from cocoop_tf.training.optimizer import CoupledSGD
from cocoop_tf.training.optimizer import WarmupCosineSchedule
from cocoop_tf.training.optimizer import paper_optimizer
from cocoop_tf.training.prompt_aggregation import GaussianPromptAggregation
from cocoop_tf.training.prompt_aggregation import gpa_weights
