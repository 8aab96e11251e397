"""The paper's protocols as one-call runners: base-to-new, cross-dataset, domain generalisation.

    from cocoop_tf.protocols import RunConfig, run_protocol
    config = RunConfig(backbone="clip_vit_base_patch16", data_root="/data")
    run_protocol("base2new", config, "runs/pets", source="oxford_pets",
                 subset="base", evaluations=[("oxford_pets", "base"), ("oxford_pets", "new")])

`cocoop-tf base2new|cross-dataset|domain-generalization|train|evaluate` wrap these.
"""

from cocoop_tf.protocols.config import RunConfig
from cocoop_tf.protocols.config import make_config
from cocoop_tf.protocols.config import read_config_file
from cocoop_tf.protocols.evaluation import load_predictions
from cocoop_tf.protocols.results import harmonic_mean
from cocoop_tf.protocols.run_folder import RunFolderError
from cocoop_tf.protocols.runner import run_protocol
