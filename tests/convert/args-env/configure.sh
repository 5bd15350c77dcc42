#!/bin/sh
# Takes its settings from the environment only, as npm reads NODE_ENV.
echo "release=${RELEASE:-unset} env=${APP_ENV:-unset} tools=${TOOLS} old=${OLD_TOOLS}"
