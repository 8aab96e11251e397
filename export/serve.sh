#!/bin/sh
# Serves the models of models.config with TF Serving's Docker image:
# gRPC on localhost:8500, REST on localhost:8501.
set -e
cd "$(dirname "$0")"
exec docker run --rm -p 8500:8500 -p 8501:8501 \
  --mount type=bind,source="$PWD/models",target=/models,readonly \
  --mount type=bind,source="$PWD/models.config",target=/config/models.config,readonly \
  tensorflow/serving \
  --model_config_file=/config/models.config
