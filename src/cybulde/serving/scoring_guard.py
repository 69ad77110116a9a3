"""What MLflow's scoring server (`mlflow models serve`) answers a refused request: one line, never the request.

MLflow's own error messages quote the request: a body that is not JSON comes back whole after
"Input:", a refused prediction as "Failed to predict data '<the parsed data>'", and a body that is
not UTF-8 inside the decoding error's repr; some carry a stack trace. JSON nested deeper than the
parser allows raises a RecursionError that MLflow does not catch: HTTP 500. The served model, loaded
inside that server, wraps its `invocations` function once so that every refusal is HTTP 400 (or the
status MLflow chose) with a message of at most `MAX_MESSAGE_CHARS` characters that does not quote
the request, and no stack trace. Memory is another matter: the server reads a whole body before
any of this runs, so the body size is capped in front of it (the reverse proxy, see the README).
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_CHARS = 500
GUARD_MARK = "_cybulde_guarded"


def guard_scoring_server() -> None:
    """Wrap `mlflow.pyfunc.scoring_server.invocations` (which its request handler looks up per call)."""
    from mlflow.pyfunc import scoring_server

    original = scoring_server.invocations
    if getattr(original, GUARD_MARK, False):
        return

    def invocations(data: Any, content_type: Any, model: Any, input_schema: Any) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

        try:
            return original(data, content_type, model, input_schema)
        except MlflowException as error:
            raise MlflowException(refusal_message(error), error_code=ErrorCode.Value(error.error_code)) from None
        except RecursionError:
            raise MlflowException("the request is nested too deeply to parse", error_code=INVALID_PARAMETER_VALUE) \
                from None

    setattr(invocations, GUARD_MARK, True)
    scoring_server.invocations = invocations


def refusal_message(error: BaseException) -> str:
    """The reason of an MLflow refusal, without the request data MLflow quotes in it."""
    cause = error.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return (f"the request body is not UTF-8 encoded text (byte 0x{cause.object[cause.start]:02x} at "
                f"offset {cause.start})")
    if type(cause).__name__ == "JSONDecodeError":
        return f"the request body is not valid JSON: {cause.msg} (line {cause.lineno}, column {cause.colno})"
    message = str(getattr(error, "message", error))
    message = message.split("\nInput:", 1)[0]  # MLflow appends the whole body after "Input:"
    message = message.rsplit("Error: ", 1)[-1]  # "Failed to predict data '<data>'. Error: <reason>"
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + " [...]"
