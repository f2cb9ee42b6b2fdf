#!/bin/sh
# Make a compressed, drag-to-Applications disk image from the PyInstaller .app (macOS only; uses hdiutil).
#   sh packaging/macos/make_dmg.sh "packaging/dist/HITL Desktop.app" packaging/dist/hitl-desktop-X.Y.Z-macos-arm64.dmg X.Y.Z
# build.py runs this after PyInstaller. Sign and notarize the .app *before* this step when distributing outside
# the organisation (codesign --deep --options runtime ...; xcrun notarytool submit ...; xcrun stapler staple).
set -eu
APP=$1
OUT=$2
VERSION=${3:-}
[ -d "$APP" ] || { echo "no such app bundle: $APP" >&2; exit 2; }
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
# ditto keeps symlinks, extended attributes and code signatures intact (cp -R does not).
ditto "$APP" "$STAGE/$(basename "$APP")"
ln -s /Applications "$STAGE/Applications"
rm -f "$OUT"
hdiutil create -volname "HITL Desktop${VERSION:+ $VERSION}" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$OUT"
hdiutil verify "$OUT"
echo "built $OUT"
