#!/usr/bin/env bash
# The offline substitute for the official PostgreSQL image of infra/tracking-server/docker-compose.yml:
# Debian bookworm's PostgreSQL 15 on the base of python-base.sh, with an entry point that honours the
# same settings (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, data in /var/lib/postgresql/data).
# Use it with POSTGRES_IMAGE=localhost/cybulde-postgres:15-bookworm in infra/tracking-server/.env.
#
#   infra/image/postgres-image.sh [--tag TAG] [--base IMAGE] [--rebuild]
#
#   --tag TAG      the image to create (default localhost/cybulde-postgres:15-bookworm)
#   --base IMAGE   a Debian bookworm image (default: python-base.sh's, built if missing)
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

tag=localhost/cybulde-postgres:15-bookworm
# shellcheck source=infra/image/service-image.sh
source "$(dirname "$0")/service-image.sh"
prepare_service_image "$@"
# The official image's start-up contract: a first start creates the cluster, the user (with a
# password, scram-sha-256 from any host) and the database; later starts reuse the volume.
cat > "$context/entrypoint.sh" <<'ENTRYPOINT'
#!/bin/bash
set -euo pipefail
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
user="${POSTGRES_USER:-postgres}"
database="${POSTGRES_DB:-$user}"
bin=(/usr/lib/postgresql/*/bin)
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /run/postgresql
chown postgres:postgres "$PGDATA" /run/postgresql
chmod 700 "$PGDATA"
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  password_file="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$password_file"
  chown postgres "$password_file"
  as_postgres "${bin[0]}/initdb" --pgdata="$PGDATA" --username="$user" --auth=scram-sha-256 \
    --pwfile="$password_file" >/dev/null
  rm "$password_file"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [[ "$database" != postgres ]]; then
    as_postgres "${bin[0]}/postgres" --single -D "$PGDATA" postgres <<< "CREATE DATABASE \"$database\";" >/dev/null
  fi
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "${bin[0]}/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
ENTRYPOINT

podman build --quiet --format docker --tag "$tag" --build-arg "BASE=$base" -f - "$context" >/dev/null <<'CONTAINERFILE'
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/*
COPY --chmod=755 entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data PATH=/usr/lib/postgresql/15/bin:${PATH}
VOLUME /var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
CONTAINERFILE
echo "$tag: $(podman run --rm --entrypoint postgres "$tag" --version)"
