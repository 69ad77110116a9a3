"""Raw text in, labels and probabilities out: everything between a trained model and its users.

- `scorer`: the one text path from a raw string to logits (the cleaning publish applied, the
  tokenizer and truncation the model was trained with), batched by length, thread-safe;
- `readers` / `writers`: the input files and requests `predict` and the served model accept, with
  their limits, and the output files `predict` writes;
- `predict`: the `cybulde predict` command;
- `pyfunc`: the MLflow `python_function` model (logged from code, see `model_code.py`).

`evaluation` and `tracking` use this package; it depends only on `models`, `data`, `config`,
`hardware` and `errors`.
"""
