"""The served classifier as code: MLflow runs this file to build the pyfunc model (models from code).

It is copied into every logged model; the `cybulde` package it imports travels with the model as
code (see `cybulde.publishing.log_pyfunc_model`).
"""

import mlflow.models

from cybulde.serving.pyfunc import TextClassifierModel

mlflow.models.set_model(TextClassifierModel())
