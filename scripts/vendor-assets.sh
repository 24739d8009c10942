#!/usr/bin/env bash
# Vendor the portal's front-end libraries into static/vendor/ from the npm registry.
# Pinned versions: re-running gives the same files. No CDN is used at run time.
set -euo pipefail

HTMX_VERSION="2.0.11"
BOOTSTRAP_VERSION="5.3.9"
BOOTSTRAP_ICONS_VERSION="1.13.1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

npm install --prefix "$work" --no-save --no-audit --no-fund --ignore-scripts \
    "htmx.org@$HTMX_VERSION" "bootstrap@$BOOTSTRAP_VERSION" "bootstrap-icons@$BOOTSTRAP_ICONS_VERSION" >/dev/null

modules="$work/node_modules"
rm -rf "$dest"
mkdir -p "$dest/htmx" "$dest/bootstrap" "$dest/bootstrap-icons/fonts"

cp "$modules/htmx.org/dist/htmx.min.js" "$dest/htmx/"
cp "$modules/htmx.org/LICENSE" "$dest/htmx/LICENSE"

cp "$modules/bootstrap/dist/css/bootstrap.min.css" "$modules/bootstrap/dist/css/bootstrap.min.css.map" "$dest/bootstrap/"
cp "$modules/bootstrap/LICENSE" "$dest/bootstrap/LICENSE"

cp "$modules/bootstrap-icons/font/bootstrap-icons.min.css" "$dest/bootstrap-icons/"
cp "$modules/bootstrap-icons/font/fonts/bootstrap-icons.woff2" "$modules/bootstrap-icons/font/fonts/bootstrap-icons.woff" \
    "$dest/bootstrap-icons/fonts/"
cp "$modules/bootstrap-icons/LICENSE" "$dest/bootstrap-icons/LICENSE"

cat > "$dest/VERSIONS" <<VERSIONS
htmx.org $HTMX_VERSION
bootstrap $BOOTSTRAP_VERSION
bootstrap-icons $BOOTSTRAP_ICONS_VERSION
VERSIONS
echo "vendored into $dest:"
cat "$dest/VERSIONS"
