"""Deployment: SavedModels for TF Serving and TFLite models taking token ids.

Exported graphs take images and tokenised class names, so a served model
answers for any class set without retraining. Tokenise class names on the
client with `serving_token_ids(model, names)` (or
`cocoop_tf.tokenize_classnames`); the graphs contain no tokenizer.
"""

from cocoop_tf.export.checkpoint import load_model
from cocoop_tf.export.saved_model import export_saved_model
from cocoop_tf.export.signatures import model_info
from cocoop_tf.export.signatures import serving_functions
from cocoop_tf.export.signatures import serving_token_ids
from cocoop_tf.export.tflite import export_tflite
