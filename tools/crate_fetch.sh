# Downloads a pinned crates.io package and unpacks it (sourced by tools/build_c_codebases.sh and
# tools/build_quickjs.sh; not run on its own). The pin is the SHA-256 of the `.crate` that the
# crates.io index (index.crates.io) publishes for that version; a download that does not match is
# refused. Needs curl, sha256sum and tar.
#
# crate_fetch <cache dir> <crate> <version> <sha256>: prints the unpacked package's directory.
crate_fetch() {
  local cache=$1 crate=$2 version=$3 sha=$4 file dir
  command -v curl >/dev/null || { echo "crate_fetch: curl not found (apt-get install curl)" >&2; return 1; }
  mkdir -p "$cache"
  file="$cache/$crate-$version.crate"
  dir="$cache/$crate-$version"
  if ! echo "$sha  $file" | sha256sum --check --status 2>/dev/null; then
    rm -rf "$dir"
    curl -sSfL --retry 3 -o "$file.part" \
      "https://static.crates.io/crates/$crate/$crate-$version.crate" ||
      { echo "crate_fetch: download of $crate $version failed" >&2; return 1; }
    echo "$sha  $file.part" | sha256sum --check --status ||
      { echo "crate_fetch: $crate-$version.crate does not have the pinned SHA-256 $sha" >&2; return 1; }
    mv "$file.part" "$file"
  fi
  if [ ! -f "$dir/.unpacked-$sha" ]; then
    rm -rf "$dir"
    tar -xzf "$file" -C "$cache"
    touch "$dir/.unpacked-$sha"
  fi
  echo "$dir"
}
