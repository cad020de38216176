#!/usr/bin/env bash
# Builds the fedcsg runtime image without pulling anything: for machines whose Docker engine has
# no registry. Assembles a base root file system from this machine's files (the shared libraries
# the binaries link, /bin/sh, passwd/group), brings it in with `docker import` as fedcsg-base:local,
# then builds deploy/Dockerfile.prebuilt on it with the binaries from target/. Prints the size.
#
#   deploy/build-images-offline.sh [--profile debug|release] [--build] [--tag IMAGE] [--no-strip]
#
#   --profile  which target/ binaries to use; default: release when all are built and not older
#              than the debug ones, else debug
#   --build    run `cargo build --workspace --bins` (with --release for release) first
#   --tag      image name (default fedcsg:local; the base is fedcsg-base:local)
#   --no-strip keep the binaries' line tables (default: stripped of debug info in the image)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=auto build=0 tag=fedcsg:local strip=1
base=fedcsg-base:local
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --build) build=1; shift ;;
    --tag) tag="$2"; shift 2 ;;
    --no-strip) strip=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

binaries=(fedcsg-coordinator fedcsg-worker fedcsg fedcsg-health)
target="${CARGO_TARGET_DIR:-target}"

all_built() { for b in "${binaries[@]}"; do [ -x "$target/$1/$b" ] || return 1; done; }
if [ "$profile" = auto ]; then
  profile=debug
  if all_built release; then
    profile=release
    if all_built debug; then
      for b in "${binaries[@]}"; do
        [ "$target/release/$b" -nt "$target/debug/$b" ] || profile=debug
      done
    fi
  fi
fi
case "$profile" in debug|release) ;; *) echo "--profile must be debug or release" >&2; exit 2 ;; esac
if [ "$build" = 1 ]; then
  if [ "$profile" = release ]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
fi
all_built "$profile" || { echo "missing binaries in $target/$profile: run cargo build --workspace --bins${profile/debug/}${profile/release/ --release} or pass --build" >&2; exit 1; }
echo "== binaries: $target/$profile"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs" ctx="$work/context"
mkdir -p "$rootfs"/{bin,etc,tmp,usr/local/bin} "$ctx"/{bin,state}
chmod 1777 "$rootfs/tmp"

# The base: every shared library the binaries and /bin/sh load, at the paths the loader expects.
libs() { ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'; }
{ for b in "${binaries[@]}"; do libs "$target/$profile/$b"; done; libs /bin/dash; } | sort -u | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp -L /bin/dash "$rootfs/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nfedcsg:x:10001:10001:fedcsg:/var/lib/fedcsg:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nfedcsg:x:10001:\n' >"$rootfs/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
find "$rootfs" -exec touch -h -d @0 {} +
tar --sort=name --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$work/base.tar" .
# Imported again only when its files changed (the tar is reproducible: sorted, fixed times).
base_sum="$(sha256sum "$work/base.tar" | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "org.fedcsg.base-sha256"}}' "$base" 2>/dev/null || true)" != "$base_sum" ]; then
  docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change "LABEL org.fedcsg.base-sha256=$base_sum" \
    "$work/base.tar" "$base" >/dev/null
fi
echo "== base image $base ($base_sum): $(find "$rootfs" -type f | wc -l) files, $(du -sh "$rootfs" | cut -f1)"

# The runtime image: deploy/Dockerfile.prebuilt on that base.
for b in "${binaries[@]}"; do
  if [ "$strip" = 1 ]; then objcopy --strip-debug "$target/$profile/$b" "$ctx/bin/$b"; else cp "$target/$profile/$b" "$ctx/bin/$b"; fi
done
cp deploy/fedcsg-worker-ordinal "$ctx/bin/"
cp deploy/Dockerfile.prebuilt "$ctx/Dockerfile"
# Without the buildx plugin, the classic builder (it builds FROM a local image without pulling).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
previous="$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)"
if ! docker build --build-arg "BASE_IMAGE=$base" \
  --label "org.opencontainers.image.revision=$revision" --label "org.fedcsg.profile=$profile" \
  -t "$tag" "$ctx" >"$work/build.log" 2>&1; then
  cat "$work/build.log" >&2
  exit 1
fi
# The image this tag named before, unless something still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
bytes="$(docker image inspect -f '{{.Size}}' "$tag")"
echo "== image $tag ($profile binaries, revision $revision): $((bytes / 1000000)) MB ($bytes bytes)"
