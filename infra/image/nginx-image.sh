#!/usr/bin/env bash
# The offline substitute for the official nginx image of infra/tracking-server/docker-compose.yml (its
# `proxy` service): Debian bookworm's nginx on the base of python-base.sh, with the official image's
# start-up contract: every /etc/nginx/templates/NAME.template is filled from the environment (only
# variables that are set; nginx's own `$host` and the like stay) into /etc/nginx/conf.d/NAME, then
# nginx runs in the foreground. Use it with NGINX_IMAGE=localhost/cybulde-nginx:bookworm in
# infra/tracking-server/.env.
#
#   infra/image/nginx-image.sh [--tag TAG] [--base IMAGE] [--rebuild]
#
#   --tag TAG      the image to create (default localhost/cybulde-nginx:bookworm)
#   --base IMAGE   a Debian bookworm image (default: python-base.sh's, built if missing)
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

tag=localhost/cybulde-nginx:bookworm
# shellcheck source=infra/image/service-image.sh
source "$(dirname "$0")/service-image.sh"
prepare_service_image "$@"
cat > "$context/entrypoint.sh" <<'ENTRYPOINT'
#!/bin/bash
set -euo pipefail
shopt -s nullglob
# envsubst's list of what to fill ('${NAME} ...'): the variables that are set, as the official image does
defined="$(compgen -e | sed 's/.*/${&}/' | tr '\n' ' ')"
for template in /etc/nginx/templates/*.template; do
  name="$(basename "$template" .template)"
  envsubst "$defined" < "$template" > "/etc/nginx/conf.d/$name"
done
exec "$@"
ENTRYPOINT

podman build --quiet --format docker --tag "$tag" --build-arg "BASE=$base" -f - "$context" >/dev/null <<'CONTAINERFILE'
ARG BASE
FROM ${BASE}
RUN apt-get update \
    && apt-get install --yes --no-install-recommends nginx gettext-base \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && mkdir -p /etc/nginx/templates
COPY --chmod=755 entrypoint.sh /usr/local/bin/nginx-entrypoint.sh
STOPSIGNAL SIGQUIT
ENTRYPOINT ["/usr/local/bin/nginx-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]
CONTAINERFILE
echo "$tag: $(podman run --rm --entrypoint nginx "$tag" -v 2>&1)"
