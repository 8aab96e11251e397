"""Training utilities: the paper's optimiser and schedule."""

from cocoop_tf.training.optimizer import CoupledSGD
from cocoop_tf.training.optimizer import WarmupCosineSchedule
from cocoop_tf.training.optimizer import paper_optimizer
