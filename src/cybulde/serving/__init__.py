"""Raw text in, labels and probabilities out: everything between a trained model and its users.

- `scorer`: the one text path from a raw string to logits (the cleaning publish applied, the
  tokenizer and truncation the model was trained with), batched by length, thread-safe;
- `columns`: the names scores go under (output columns, per-question threshold keys);
- `readers` / `writers`: the input files and requests `predict` and the served model accept, with
  their limits, and the output files `predict` writes;
- `predict`: the `cybulde predict` command;
- `pyfunc`: the MLflow `python_function` model (logged from code, see `model_code.py`) and reading a
  downloaded logged model;
- `integrity`: the digests of a model's files recorded at registration, and the check against them;
- `scoring_guard`: what MLflow's scoring server answers a refused request (one line, never the request).

This is the read side: loading, verifying and scoring a model. Logging and registering the served
model is `cybulde.publishing`'s job, above this package. `evaluation` and `publishing` use it; it
depends only on `models`, `data`, `config`, `hardware`, `files`, `errors` and, to resolve MLflow
URIs, `cybulde.tracking.client`.
"""
