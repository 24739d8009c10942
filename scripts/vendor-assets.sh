#!/usr/bin/env bash
# Vendor the portal's front-end libraries into static/vendor/ from the npm registry.
# Pinned versions: re-running gives the same files. No CDN is used at run time.
# Usage: scripts/vendor-assets.sh [htmx|bootstrap|bootstrap-icons|uplot ...]   (default: all of them)
set -euo pipefail

HTMX_VERSION="2.0.11"
BOOTSTRAP_VERSION="5.3.9"
BOOTSTRAP_ICONS_VERSION="1.13.1"
UPLOT_VERSION="1.6.32"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
modules="$work/node_modules"

fetch() {
    npm install --prefix "$work" --no-save --no-audit --no-fund --ignore-scripts "$@" >/dev/null
}

fresh() {
    rm -rf "$dest/$1"
    mkdir -p "$dest/$1"
}

vendor_htmx() {
    fetch "htmx.org@$HTMX_VERSION"
    fresh htmx
    cp "$modules/htmx.org/dist/htmx.min.js" "$dest/htmx/"
    cp "$modules/htmx.org/LICENSE" "$dest/htmx/LICENSE"
}

vendor_bootstrap() {
    fetch "bootstrap@$BOOTSTRAP_VERSION"
    fresh bootstrap
    cp "$modules/bootstrap/dist/css/bootstrap.min.css" "$modules/bootstrap/dist/css/bootstrap.min.css.map" \
        "$dest/bootstrap/"
    cp "$modules/bootstrap/LICENSE" "$dest/bootstrap/LICENSE"
}

vendor_bootstrap_icons() {
    fetch "bootstrap-icons@$BOOTSTRAP_ICONS_VERSION"
    fresh bootstrap-icons
    mkdir -p "$dest/bootstrap-icons/fonts"
    cp "$modules/bootstrap-icons/font/bootstrap-icons.min.css" "$dest/bootstrap-icons/"
    cp "$modules/bootstrap-icons/font/fonts/bootstrap-icons.woff2" \
        "$modules/bootstrap-icons/font/fonts/bootstrap-icons.woff" "$dest/bootstrap-icons/fonts/"
    cp "$modules/bootstrap-icons/LICENSE" "$dest/bootstrap-icons/LICENSE"
}

vendor_uplot() {
    fetch "uplot@$UPLOT_VERSION"
    fresh uplot
    cp "$modules/uplot/dist/uPlot.iife.min.js" "$modules/uplot/dist/uPlot.min.css" "$dest/uplot/"
    cp "$modules/uplot/LICENSE" "$dest/uplot/LICENSE"
}

libraries=("$@")
[ ${#libraries[@]} -eq 0 ] && libraries=(htmx bootstrap bootstrap-icons uplot)
for library in "${libraries[@]}"; do
    case "$library" in
        htmx) vendor_htmx ;;
        bootstrap) vendor_bootstrap ;;
        bootstrap-icons) vendor_bootstrap_icons ;;
        uplot) vendor_uplot ;;
        *) echo "Unknown library '$library': choose among htmx, bootstrap, bootstrap-icons, uplot." >&2; exit 2 ;;
    esac
done

cat > "$dest/VERSIONS" <<VERSIONS
htmx.org $HTMX_VERSION
bootstrap $BOOTSTRAP_VERSION
bootstrap-icons $BOOTSTRAP_ICONS_VERSION
uplot $UPLOT_VERSION
VERSIONS
echo "vendored ${libraries[*]} into $dest:"
cat "$dest/VERSIONS"
