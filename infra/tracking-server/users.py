"""The tracking server's users, made by its admin: the pipeline's CI identity and read-only viewers.

    export MLFLOW_TRACKING_URI=https://mlflow.internal MLFLOW_TRACKING_SERVER_CERT_PATH=/etc/mlflow/cert.pem
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...     # the admin's credential
    export NEW_USER_PASSWORD=...                                          # the new user's password
    python infra/tracking-server/users.py ci ci-pipeline --experiment cybulde --registered-model cybulde-classifier
    python infra/tracking-server/users.py viewer alice

Roles (MLflow's basic-auth permissions; start.sh sets `default_permission = READ`):
- viewer: a user with no grant; reads everything through the default permission and changes nothing
  the CI identity made (no alias, no run deletion, no artifact write);
- ci: EDIT on the pipeline's experiment and registered model, made here by the admin if missing: it
  creates runs, logs artifacts, registers versions and moves aliases, and may delete nothing;
- admin: everything, including these users and grants (MLFLOW_AUTH_ADMIN_PASSWORD at the first start).

Passwords come from the environment only, never the command line; an existing user gets the
password of NEW_USER_PASSWORD. Needs the project's environment (mlflow).
"""

from __future__ import annotations

import argparse
import os
import sys

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException
from mlflow.server.auth.client import AuthServiceClient

CI_PERMISSION = "EDIT"


def ensure_user(auth: AuthServiceClient, name: str, password: str) -> None:
    try:
        auth.create_user(name, password)
        print(f"created user {name}")
    except RestException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(name, password)
        print(f"user {name} exists: password updated")


def experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    try:
        client.create_registered_model(name)
    except RestException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def grant_ci(auth: AuthServiceClient, client: MlflowClient, user: str, experiment: str, model: str) -> None:
    auth.grant_user_permission(user, "experiment", experiment_id(client, experiment), CI_PERMISSION)
    ensure_registered_model(client, model)
    auth.grant_user_permission(user, "registered_model", model, CI_PERMISSION)
    print(f"{user}: {CI_PERMISSION} on experiment {experiment} and registered model {model}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["ci", "viewer"])
    parser.add_argument("name")
    parser.add_argument("--experiment", default="cybulde", help="ci: the pipeline's experiment (mlflow.experiment)")
    parser.add_argument("--registered-model", default="cybulde-classifier",
                        help="ci: the registered model (mlflow.registered_model)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    uri, password = os.environ.get("MLFLOW_TRACKING_URI", ""), os.environ.get("NEW_USER_PASSWORD", "")
    if not uri or not password:
        print("error: set MLFLOW_TRACKING_URI, the admin's MLFLOW_TRACKING_USERNAME/PASSWORD and NEW_USER_PASSWORD",
              file=sys.stderr)
        return 2
    auth = AuthServiceClient(uri)
    try:
        ensure_user(auth, args.name, password)
        if args.role == "ci":
            grant_ci(auth, MlflowClient(uri), args.name, args.experiment, args.registered_model)
    except MlflowException as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
