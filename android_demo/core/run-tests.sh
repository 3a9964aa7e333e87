#!/usr/bin/env bash
# Build athe-core and run its JUnit tests offline, with Debian's packaged Maven repository.
#
#   android_demo/core/run-tests.sh            # from anywhere
#
# Installs the Debian packages it needs when they are missing (apt-get update only then), runs
# `mvn -o test` against /usr/share/maven-repo and prints Surefire's summary line. Exit status is
# Maven's: non-zero when a test fails or the build breaks.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo=/usr/share/maven-repo
# maven: the build tool; openjdk-17-jdk-headless: javac 17; junit4 (+ hamcrest): the tests;
# the plugin packages put the versions pinned in pom.xml into $repo.
packages=(maven openjdk-17-jdk-headless junit4 libsurefire-java libmaven-compiler-plugin-java
          libmaven-resources-plugin-java libmaven-jar-plugin-java)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
# -o: offline; the local repository is Debian's read-only one, so nothing is downloaded or written there.
mvn -o -B -Dmaven.repo.local="$repo" -Dstyle.color=never -f "$here/pom.xml" test >"$log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    cat "$log"
    echo "athe-core: mvn test failed (exit $status)" >&2
    exit "$status"
fi
# Surefire prints one "Tests run" line per class, then the total (the last one).
grep -E "Tests run: [0-9]+, Failures" "$log" | tail -n 1
echo "athe-core: all JUnit tests passed (offline, $repo)"
