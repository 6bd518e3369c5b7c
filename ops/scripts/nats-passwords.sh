#!/usr/bin/env bash
# Gives every NATS user of ops/nats/nats.conf a password, for
# docker-compose.mcp.yml: appends SOPHIA_NATS_<USER>_PASSWORD=<random> to
# .env (which compose reads) for each user that has none there or in the
# environment yet. Run it again after a user is added; existing passwords
# are kept. The passwords are never printed.
#
#   ./ops/scripts/nats-passwords.sh            # writes ./.env
#   ./ops/scripts/nats-passwords.sh other.env  # or another file
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
env_file="${1:-$root/.env}"
conf="$root/ops/nats/nats.conf"

command -v openssl >/dev/null 2>&1 || { echo "nats-passwords: openssl is needed" >&2; exit 1; }
umask 077
touch "$env_file"

added=()
while IFS= read -r var; do
  if grep -q "^$var=" "$env_file" || [ -n "${!var:-}" ]; then
    continue
  fi
  echo "$var=$(openssl rand -hex 16)" >>"$env_file"
  added+=("$var")
done < <(grep -o 'password: \$SOPHIA_NATS_[A-Z_]*_PASSWORD' "$conf" | sed 's/^password: \$//' | sort -u)

if [ "${#added[@]}" -gt 0 ]; then
  echo "nats-passwords: added ${added[*]} to $env_file" >&2
else
  echo "nats-passwords: every NATS user already has a password" >&2
fi
