#!/bin/sh
# The locked-down example's service. Its root filesystem is read-only: the one place it
# may write is its tmpfs, /run/www, where it writes the page it then serves.
set -eu
{
    echo "locked-down service, running as $(id -un) (uid $(id -u))"
    grep CapEff /proc/self/status
} > /run/www/index.html
exec httpd -f -v -p 8080 -h /run/www
